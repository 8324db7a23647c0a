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

// One lane of a group's codes: Σ|x| of its inner and its outer values and
// how many are outer. Branch-free: a value is outer about a third of the
// time, at random, which a branch would mispredict.
struct Lane {
  double inner_abs = 0.0, outer_abs = 0.0;
  uint32_t outer = 0;
  // 0 / 1: negative outer / inner; 2 / 3: positive inner / outer.
  uint32_t code(float x, float threshold) {
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
    outer_abs += ao;
    inner_abs += ai;
    outer += o;
    return 2u * (1u - neg) + (o ^ neg);
  }
};

// One group: scale, then codes. Returns false (nothing meaningful written)
// when a value is NaN/inf. Two passes: the RMS (for the threshold), then
// the codes with the sums the least-squares scale needs. The sums are in
// double: a square of 1e20 would overflow a float. Four lanes each, so
// the adds do not wait on one another (the order is fixed: the same bits on
// every run).
bool encode_group(const float* x, size_t len, uint8_t* out) {
  uint32_t bad = 0;
  double ss[4] = {0.0, 0.0, 0.0, 0.0};
  for (size_t i = 0; i < len; ++i) {
    bad |= non_finite_bit(x[i]);
    ss[i & 3] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
  if (bad) return false;
  const double sum_sq = (ss[0] + ss[1]) + (ss[2] + ss[3]);
  const float threshold = static_cast<float>(kInt2Threshold * std::sqrt(sum_sq / static_cast<double>(len)));
  uint8_t* codes = out + sizeof(float);
  // Σ|x| over the inner and the outer codes (a lane per position in a
  // byte), and how many are outer.
  Lane l0, l1, l2, l3;
  size_t q = 0;
  for (; q + 4 <= len; q += 4)
    codes[q / 4] = static_cast<uint8_t>(l0.code(x[q], threshold) | l1.code(x[q + 1], threshold) << 2 |
                                        l2.code(x[q + 2], threshold) << 4 | l3.code(x[q + 3], threshold) << 6);
  if (q < len) {
    uint32_t byte = 0;
    for (size_t j = 0; q + j < len; ++j) byte |= l0.code(x[q + j], threshold) << (2 * j);
    codes[q / 4] = static_cast<uint8_t>(byte);
  }
  const double inner_abs = (l0.inner_abs + l1.inner_abs) + (l2.inner_abs + l3.inner_abs);
  const double outer_abs = (l0.outer_abs + l1.outer_abs) + (l2.outer_abs + l3.outer_abs);
  const size_t outer = l0.outer + l1.outer + l2.outer + l3.outer;
  // The least-squares scale for the chosen codes: Σ|x|·level / Σ level².
  const double lo = kInt2Levels[2], hi = kInt2Levels[3];
  const double num = lo * inner_abs + hi * outer_abs;
  const double den = lo * lo * static_cast<double>(len - outer) + hi * hi * static_cast<double>(outer);
  // A group whose values are all near FLT_MAX could fit a scale whose outer
  // level overflows: clamped (such a pseudo-gradient has diverged anyway).
  const float scale = static_cast<float>(std::clamp(num / den, 0.0, static_cast<double>(kMaxScale)));
  std::memcpy(out, &scale, sizeof(float));
  return true;
}

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
