// A fuzz target's input read byte by byte: past its end every byte is 0, so
// a target can take as many decisions as it likes from any input.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

struct FuzzInput {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::vector<uint8_t> bytes(size_t k) {
    std::vector<uint8_t> out;
    while (k-- > 0) out.push_back(byte());
    return out;
  }
};
