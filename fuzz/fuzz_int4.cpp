// libFuzzer target: int4 payloads as they come off a ring link (the int4
// decoder, issue 18). The first 4 bytes choose the value count and group;
// the rest is the payload. Whatever int4_validate accepts must decode to
// finite values with no out-of-bounds access.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dist/quantize4.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint16_t n16, g16;
  std::memcpy(&n16, data, 2);
  std::memcpy(&g16, data + 2, 2);
  const size_t n = n16, group = g16 % 256 + 1;
  const std::vector<uint8_t> payload(data + 4, data + size);
  if (payload.size() != intellect::int4_encoded_bytes(n, group)) return 0;  // the ring checks sizes first
  try {
    intellect::int4_validate(payload.data(), n, group, "fuzz");
    std::vector<float> out(n, 0.0f);
    intellect::int4_decode_add(payload.data(), n, group, out.data());
    for (float v : out)
      if (!std::isfinite(v)) std::abort();
  } catch (const intellect::Error&) {
  }
  return 0;
}
