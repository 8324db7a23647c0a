#include "dist/quantize2.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "dist/finite.h"
#include "dist/quantize2_kernels.h"
#include "dist/quantize_kernels.h"
#include "util/error.h"

namespace intellect {

static_assert(std::endian::native == std::endian::little, "the int2 wire format assumes a little-endian host");

namespace {

size_t group_bytes(size_t len) { return sizeof(float) + (len + 3) / 4; }

// One lane's Σ|x| of its inner and its outer values. Branch-free: a value
// is outer about a third of the time, at random, which a branch would
// mispredict. Returns the value's code: 0 / 1 negative outer / inner, 2 / 3
// positive inner / outer; *outer += 1 when outer.
inline uint32_t code_of(float x, float threshold, double* inner_abs, double* outer_abs, size_t* outer) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const uint32_t neg = bits >> 31, abits = bits & 0x7fffffffu;
  float a;
  std::memcpy(&a, &abits, 4);
  const uint32_t o = a > threshold ? 1u : 0u, mask = 0u - o;
  const uint32_t ob = abits & mask, ib = abits & ~mask;
  float ao, ai;
  std::memcpy(&ao, &ob, 4);
  std::memcpy(&ai, &ib, 4);
  *outer_abs += ao;
  *inner_abs += ai;
  *outer += o;
  return 2u * (1u - neg) + (o ^ neg);
}

}  // namespace

// Two passes: the RMS (for the threshold), then the codes with the sums the
// least-squares scale needs. The sums are in double (a square of 1e20 would
// overflow a float), in eight lanes (int2_kernels::reduce8).
bool int2_kernels::encode_group_portable(const float* x, size_t len, uint8_t* out) {
  uint32_t bad = 0;
  double ss[8] = {};
  for (size_t i = 0; i < len; ++i) {
    bad |= non_finite_bit(x[i]);
    ss[i & 7] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
  if (bad) return false;
  const float threshold = threshold_of(reduce8(ss), len);
  uint8_t* codes = out + sizeof(float);
  double inner_abs[8] = {}, outer_abs[8] = {};
  size_t outer = 0;
  for (size_t q = 0; q < len; q += 4) {
    uint32_t byte = 0;
    for (size_t j = 0; j < 4 && q + j < len; ++j) {
      const size_t i = q + j;
      byte |= code_of(x[i], threshold, &inner_abs[i & 7], &outer_abs[i & 7], &outer) << (2 * j);
    }
    codes[q / 4] = static_cast<uint8_t>(byte);
  }
  const float scale = fit_scale(reduce8(inner_abs), reduce8(outer_abs), outer, len);
  std::memcpy(out, &scale, sizeof(float));
  return true;
}

namespace {

template <bool kAdd>
inline void put(float* o, float v) {
  if constexpr (kAdd) *o += v;
  else *o = v;
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
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
      const uint32_t b = codes[i / 4];
      put<kAdd>(o + i, lv[b & 3u]);
      put<kAdd>(o + i + 1, lv[(b >> 2) & 3u]);
      put<kAdd>(o + i + 2, lv[(b >> 4) & 3u]);
      put<kAdd>(o + i + 3, lv[b >> 6]);
    }
    for (; i < len; ++i) put<kAdd>(o + i, lv[(codes[i / 4] >> (2 * (i & 3))) & 3u]);
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
  const bool avx2 = group == kInt2DefaultGroup && int8_kernels::avx2_available();
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = std::min(group, n - begin);
    const bool ok = avx2 && len == group ? int2_kernels::encode_group64_avx2(x + begin, out)
                                         : int2_kernels::encode_group_portable(x + begin, len, out);
    if (!ok) {
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
    if (!(scale >= 0.0f && scale <= int2_kernels::kMaxScale))  // also refuses NaN
      fail(what, ": int2 group ", g, " has scale ", scale,
           "; a peer sent a negative, non-finite or overflowing scale (a diverged node or a corrupt message)");
    in += group_bytes(len);
  }
}

void int2_decode(const uint8_t* in, size_t n, size_t group, float* out) { decode_impl<false>(in, n, group, out); }
void int2_decode_add(const uint8_t* in, size_t n, size_t group, float* acc) { decode_impl<true>(in, n, group, acc); }

}  // namespace intellect
