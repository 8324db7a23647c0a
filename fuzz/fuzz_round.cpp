// libFuzzer target: a round's averaged pseudo-gradient as a late node or a
// joiner receives it from a donor. Any byte string must decode or raise
// intellect::Error; what decodes holds only finite values.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "dist/round_codec.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The model size comes from the blob's own header (bytes 8..15) when it is
  // small, so that well-formed inputs reach the piece decoder.
  uint64_t total = 0;
  if (size >= 16) std::memcpy(&total, data + 8, 8);
  if (total > (size_t{1} << 20)) total = 1000;
  std::vector<float> out(total);
  try {
    intellect::decode_round(std::span<const uint8_t>(data, size), out, "fuzz");
    for (float v : out)
      if (!std::isfinite(v)) std::abort();
  } catch (const intellect::Error&) {
  }
  return 0;
}
