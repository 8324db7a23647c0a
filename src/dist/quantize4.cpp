#include "dist/quantize4.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "dist/quantize4_kernels.h"
#include "dist/quantize_kernels.h"
#include "util/error.h"

namespace intellect {

static_assert(std::endian::native == std::endian::little, "the int4 wire format assumes a little-endian host");

size_t int4_encoded_bytes(size_t n, size_t group) {
  INTELLECT_CHECK(group > 0);
  const size_t full = n / group, tail = n % group;
  return full * (sizeof(float) + (group + 1) / 2) + (tail ? sizeof(float) + (tail + 1) / 2 : 0);
}

// One group: scale, then codes. Returns the bytes written. The reference
// encoder, and the one CPUs without AVX2 run.
size_t int4_kernels::encode_group_portable(const float* x, size_t len, uint8_t* out) {
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
  // code = floor(x·inv + 8.5), x·inv clamped to [-7, 7]: round half up,
  // truncation of a positive value (vectorises, unlike nearbyint).
  auto pack = [&](auto scaled) {
    auto code = [&](float v) {
      float q = scaled(v);
      q = q < -7.0f ? -7.0f : (q > 7.0f ? 7.0f : q);
      return static_cast<uint32_t>(static_cast<int32_t>(q + 8.5f));
    };
    size_t i = 0;
    for (; i + 2 <= len; i += 2) codes[i / 2] = static_cast<uint8_t>(code(x[i]) | (code(x[i + 1]) << 4));
    if (i < len) codes[i / 2] = static_cast<uint8_t>(code(x[i]));
  };
  if (std::isfinite(inv)) pack([&](float v) { return v * inv; });
  else pack([&](float v) { return static_cast<float>(v * inv_d); });
  return 4 + (len + 1) / 2;
}

namespace {

template <bool kAdd>
void decode_impl(const uint8_t* in, size_t n, size_t group, float* out) {
  INTELLECT_CHECK(group > 0);
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = std::min(group, n - begin);
    float scale;
    std::memcpy(&scale, in, 4);
    const uint8_t* codes = in + 4;
    float* o = out + begin;
    size_t i = 0;
    for (; i + 2 <= len; i += 2) {
      const uint8_t b = codes[i / 2];
      const float v0 = static_cast<float>(static_cast<int>(b & 0xf) - 8) * scale;
      const float v1 = static_cast<float>(static_cast<int>(b >> 4) - 8) * scale;
      if constexpr (kAdd) {
        o[i] += v0;
        o[i + 1] += v1;
      } else {
        o[i] = v0;
        o[i + 1] = v1;
      }
    }
    if (i < len) {
      const float v = static_cast<float>(static_cast<int>(codes[i / 2] & 0xf) - 8) * scale;
      if constexpr (kAdd) o[i] += v;
      else o[i] = v;
    }
    in += 4 + (len + 1) / 2;
  }
}

}  // namespace

void int4_encode(const float* x, size_t n, size_t group, uint8_t* out, const char* what) {
  INTELLECT_CHECK(group > 0);
  size_t begin = 0;
  if (int8_kernels::avx2_available()) {
    begin = int4_kernels::encode_avx2(x, n, group, out);
    if (begin == n) return;
    out += (begin / group) * (sizeof(float) + (group + 1) / 2);  // to the failing group
  }
  for (; begin < n; begin += group) {
    const size_t len = std::min(group, n - begin);
    const size_t wrote = int4_kernels::encode_group_portable(x + begin, len, out);
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

void int4_decode(const uint8_t* in, size_t n, size_t group, float* out) {
  INTELLECT_CHECK(group > 0);
  if (int8_kernels::avx2_available()) int4_kernels::decode_avx2(in, n, group, out);
  else decode_impl<false>(in, n, group, out);
}
void int4_decode_add(const uint8_t* in, size_t n, size_t group, float* acc) {
  INTELLECT_CHECK(group > 0);
  if (int8_kernels::avx2_available()) int4_kernels::decode_add_avx2(in, n, group, acc);
  else decode_impl<true>(in, n, group, acc);
}

}  // namespace intellect
