// libFuzzer target: coordinator protocol messages (control frames' payloads).
// Any byte string must decode to a message or raise intellect::Error; a
// decoded message must re-encode to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "dist/control.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  try {
    const intellect::control::Message m = intellect::control::decode(bytes, "fuzz");
    if (intellect::control::encode(m) != bytes) std::abort();  // decode accepted bytes it would not write
  } catch (const intellect::Error&) {
  }
  return 0;
}
