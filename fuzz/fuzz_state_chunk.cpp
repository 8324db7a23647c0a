// libFuzzer target: state-stream chunks as a joiner receives them from a
// donor. Any byte string must parse or raise intellect::Error; what parses
// re-encodes to the same bytes.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "dist/state_chunk.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> msg(data, size);
  try {
    std::span<const uint8_t> bytes;
    const intellect::StateChunkHeader h = intellect::parse_state_chunk(msg, bytes, "fuzz");
    if (bytes.size() != h.count) std::abort();
    const auto again = intellect::encode_state_chunk(h, bytes);
    if (again.size() != size || !std::equal(again.begin(), again.end(), data)) std::abort();
    (void)intellect::blake2b_256(bytes);
  } catch (const intellect::Error&) {
  }
  return 0;
}
