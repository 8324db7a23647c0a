// libFuzzer target: int2 payloads as they come off a blocks2 ring link or a
// donor's round (the int2 decoder, dist/quantize2.h). The first 4 bytes
// choose the value count and group; the rest is the payload. Whatever
// int2_validate accepts must decode to finite values (decode and
// decode_add) with no out-of-bounds access; the same bytes wrapped as a
// round's int2 piece must decode to the same values or be refused.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dist/quantize2.h"
#include "dist/ring_allreduce.h"
#include "dist/round_codec.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint16_t n16, g16;
  std::memcpy(&n16, data, 2);
  std::memcpy(&g16, data + 2, 2);
  const size_t n = n16, group = g16 % 256 + 1;
  const std::vector<uint8_t> payload(data + 4, data + size);
  if (payload.size() != intellect::int2_encoded_bytes(n, group)) return 0;  // the ring checks sizes first
  bool valid = true;
  std::vector<float> out(n, 0.0f);
  try {
    intellect::int2_validate(payload.data(), n, group, "fuzz");
    intellect::int2_decode(payload.data(), n, group, out.data());
    std::vector<float> acc(n, 0.0f);
    intellect::int2_decode_add(payload.data(), n, group, acc.data());
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(out[i]) || (std::memcmp(&out[i], &acc[i], 4) != 0 && !(out[i] == 0 && acc[i] == 0)))
        std::abort();
  } catch (const intellect::Error&) {
    valid = false;
  }
  // Through the round codec: the same verdict and the same values.
  intellect::RingCarried c;
  c.compression = intellect::Compression::Int2;
  c.block = group;
  c.count = n;
  c.encoded = payload;
  try {
    intellect::RoundEncoder enc(n);
    enc.add_carried(c);
    const intellect::ByteBuffer blob = enc.finish();
    std::vector<float> got(n, 1.0f);
    intellect::decode_round(blob, got, "fuzz round");
    if (!valid) std::abort();  // a scale validate() refused got through
    for (size_t i = 0; i < n; ++i)
      if (std::memcmp(&got[i], &out[i], 4) != 0) std::abort();
  } catch (const intellect::Error&) {
    if (valid) std::abort();  // bytes validate() accepted were refused
  }
  return 0;
}
