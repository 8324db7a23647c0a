#include "dist/quantize4.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "util/error.h"

namespace intellect {

static_assert(std::endian::native == std::endian::little, "the int4 wire format assumes a little-endian host");

size_t int4_encoded_bytes(size_t n, size_t group) {
  INTELLECT_CHECK(group > 0);
  const size_t full = n / group, tail = n % group;
  return full * (sizeof(float) + (group + 1) / 2) + (tail ? sizeof(float) + (tail + 1) / 2 : 0);
}

namespace {

// One group: scale, then codes. Returns the bytes written.
size_t encode_group(const float* x, size_t len, uint8_t* out) {
  float amax = 0.0f;
  uint32_t bad = 0;
  for (size_t i = 0; i < len; ++i) {
    uint32_t b;
    std::memcpy(&b, &x[i], 4);
    bad |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
    const float a = std::fabs(x[i]);
    amax = a > amax ? a : amax;
  }
  if (bad) return SIZE_MAX;  // the caller finds and names the value
  const float scale = amax / 7.0f;
  std::memcpy(out, &scale, 4);
  uint8_t* codes = out + 4;
  std::memset(codes, 0, (len + 1) / 2);
  if (amax == 0.0f) {
    for (size_t i = 0; i < len; ++i) codes[i / 2] |= static_cast<uint8_t>(8u << (4 * (i & 1)));
    return 4 + (len + 1) / 2;
  }
  // 7 / amax overflows float when amax is a denormal: then in double.
  const double inv_d = 7.0 / static_cast<double>(amax);
  const float inv = static_cast<float>(inv_d);
  for (size_t i = 0; i < len; ++i) {
    float q = std::isfinite(inv) ? x[i] * inv : static_cast<float>(x[i] * inv_d);
    q = std::clamp(q, -7.0f, 7.0f);
    const int code = static_cast<int>(std::nearbyint(q)) + 8;  // 1..15
    codes[i / 2] |= static_cast<uint8_t>(code << (4 * (i & 1)));
  }
  return 4 + (len + 1) / 2;
}

template <bool kAdd>
void decode_impl(const uint8_t* in, size_t n, size_t group, float* out) {
  INTELLECT_CHECK(group > 0);
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = std::min(group, n - begin);
    float scale;
    std::memcpy(&scale, in, 4);
    const uint8_t* codes = in + 4;
    float* o = out + begin;
    for (size_t i = 0; i < len; ++i) {
      const int code = (codes[i / 2] >> (4 * (i & 1))) & 0xf;
      const float v = static_cast<float>(code - 8) * scale;
      if constexpr (kAdd) o[i] += v;
      else o[i] = v;
    }
    in += 4 + (len + 1) / 2;
  }
}

}  // namespace

void int4_encode(const float* x, size_t n, size_t group, uint8_t* out, const char* what) {
  INTELLECT_CHECK(group > 0);
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = std::min(group, n - begin);
    const size_t wrote = encode_group(x + begin, len, out);
    if (wrote == SIZE_MAX) {
      size_t i = begin;
      while (std::isfinite(x[i])) ++i;
      fail("int4 quantization of ", what, ": value ", i, " is ", x[i],
           "; a pseudo-gradient with NaN/inf must not be averaged (the inner steps diverged: "
           "lower the learning rate or restore the last checkpoint)");
    }
    out += wrote;
  }
}

void int4_validate(const uint8_t* in, size_t n, size_t group, const char* what) {
  INTELLECT_CHECK(group > 0);
  for (size_t begin = 0, g = 0; begin < n; begin += group, ++g) {
    const size_t len = std::min(group, n - begin);
    float scale;
    std::memcpy(&scale, in, 4);
    if (!std::isfinite(scale) || std::fabs(scale) > FLT_MAX / 8.0f)
      fail(what, ": int4 group ", g, " has scale ", scale,
           "; a peer sent a non-finite or overflowing value (a diverged node or a corrupt message)");
    in += 4 + (len + 1) / 2;
  }
}

void int4_decode(const uint8_t* in, size_t n, size_t group, float* out) { decode_impl<false>(in, n, group, out); }
void int4_decode_add(const uint8_t* in, size_t n, size_t group, float* acc) {
  decode_impl<true>(in, n, group, acc);
}

}  // namespace intellect
