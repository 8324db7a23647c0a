#include "dist/quantize2.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "dist/finite.h"
#include "util/error.h"

namespace intellect {

static_assert(std::endian::native == std::endian::little, "the int2 wire format assumes a little-endian host");

namespace {

constexpr float kMaxScale = FLT_MAX / 2.0f;  // 1.510 · scale stays finite

size_t group_bytes(size_t len) { return sizeof(float) + (len + 3) / 4; }

// One group: scale, then codes. Returns false (nothing meaningful written)
// when a value is NaN/inf.
bool encode_group(const float* x, size_t len, uint8_t* out) {
  uint32_t bad = 0;
  double ss = 0.0;
  for (size_t i = 0; i < len; ++i) {
    bad |= non_finite_bit(x[i]);
    ss += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
  if (bad) return false;
  const double threshold = kInt2Threshold * std::sqrt(ss / static_cast<double>(len));
  uint8_t* codes = out + sizeof(float);
  std::memset(codes, 0, (len + 3) / 4);
  // The least-squares scale for the chosen codes: Σ|x|·level / Σ level².
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < len; ++i) {
    const double a = std::fabs(static_cast<double>(x[i]));
    const uint32_t outer = a > threshold ? 1u : 0u;
    const double level = kInt2Levels[2 + outer];
    num += a * level;
    den += level * level;
    const uint32_t code = (std::signbit(x[i]) ? 1u - outer : 2u + outer);
    codes[i / 4] |= static_cast<uint8_t>(code << (2 * (i & 3)));
  }
  // A group whose values are all near FLT_MAX could fit a scale whose outer
  // level overflows: clamped (such a pseudo-gradient has diverged anyway).
  float scale = den > 0.0 ? static_cast<float>(std::min(num / den, static_cast<double>(kMaxScale))) : 0.0f;
  std::memcpy(out, &scale, sizeof(float));
  return true;
}

template <bool kAdd>
void decode_impl(const uint8_t* in, size_t n, size_t group, float* out) {
  INTELLECT_CHECK(group > 0);
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = std::min(group, n - begin);
    float scale;
    std::memcpy(&scale, in, sizeof(float));
    const float lv[4] = {kInt2Levels[0] * scale, kInt2Levels[1] * scale, kInt2Levels[2] * scale,
                         kInt2Levels[3] * scale};
    const uint8_t* codes = in + sizeof(float);
    float* o = out + begin;
    for (size_t i = 0; i < len; ++i) {
      const float v = lv[(codes[i / 4] >> (2 * (i & 3))) & 3u];
      if constexpr (kAdd) o[i] += v;
      else o[i] = v;
    }
    in += group_bytes(len);
  }
}

}  // namespace

size_t int2_encoded_bytes(size_t n, size_t group) {
  INTELLECT_CHECK(group > 0);
  const size_t full = n / group, tail = n % group;
  return full * group_bytes(group) + (tail ? group_bytes(tail) : 0);
}

void int2_encode(const float* x, size_t n, size_t group, uint8_t* out, const char* what) {
  INTELLECT_CHECK(group > 0);
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = std::min(group, n - begin);
    if (!encode_group(x + begin, len, out)) {
      const size_t i = begin + first_non_finite(x + begin, len);
      fail("int2 quantization of ", what, ": value ", i, " is ", x[i],
           "; a pseudo-gradient with NaN/inf must not be averaged (the inner steps diverged: "
           "lower the learning rate or restore the last checkpoint)");
    }
    out += group_bytes(len);
  }
}

void int2_validate(const uint8_t* in, size_t n, size_t group, const char* what) {
  INTELLECT_CHECK(group > 0);
  for (size_t begin = 0, g = 0; begin < n; begin += group, ++g) {
    const size_t len = std::min(group, n - begin);
    float scale;
    std::memcpy(&scale, in, sizeof(float));
    if (!(scale >= 0.0f && scale <= kMaxScale))  // also refuses NaN
      fail(what, ": int2 group ", g, " has scale ", scale,
           "; a peer sent a negative, non-finite or overflowing scale (a diverged node or a corrupt message)");
    in += group_bytes(len);
  }
}

void int2_decode(const uint8_t* in, size_t n, size_t group, float* out) { decode_impl<false>(in, n, group, out); }
void int2_decode_add(const uint8_t* in, size_t n, size_t group, float* acc) { decode_impl<true>(in, n, group, acc); }

}  // namespace intellect
