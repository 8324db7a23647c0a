// AVX2 int2 group encoder for groups of 64: the same bytes as
// encode_group_portable (quantize2_kernels.h).
// - Σx², and Σ|x| of the inner and the outer values, in double: value i of
//   the group in lane i mod 8 of two 4-lane registers (lanes 0-3 and 4-7),
//   the products exact (float × float fits a double), the adds in the
//   portable encoder's order, reduced by the same reduce8 order. This file
//   enables AVX2 but not FMA, so no add is fused into a multiply.
// - codes: the outer and the sign bits of 8 values (movemask) spread to
//   even bit positions and combined: code = 2·(1 − sign) + (outer ^ sign).
#include <immintrin.h>

#include <bit>
#include <cstring>

#include "dist/quantize2_kernels.h"

namespace intellect::int2_kernels {

namespace {

#define INTELLECT_AVX2 __attribute__((target("avx2")))

// Bit j of b to bit 2j.
constexpr uint16_t spread_bits(uint32_t b) {
  uint16_t r = 0;
  for (int j = 0; j < 8; ++j) r = static_cast<uint16_t>(r | (((b >> j) & 1u) << (2 * j)));
  return r;
}
struct SpreadTable {
  uint16_t v[256];
  constexpr SpreadTable() : v() {
    for (uint32_t b = 0; b < 256; ++b) v[b] = spread_bits(b);
  }
};
constexpr SpreadTable kSpread;

INTELLECT_AVX2 inline double reduce(__m256d lo, __m256d hi) {
  double s[8];
  _mm256_storeu_pd(s, lo);
  _mm256_storeu_pd(s + 4, hi);
  return reduce8(s);
}

}  // namespace

INTELLECT_AVX2 bool encode_group64_avx2(const float* x, uint8_t* out) {
  const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  __m256d ss_lo = _mm256_setzero_pd(), ss_hi = _mm256_setzero_pd();
  for (int c = 0; c < 8; ++c) {
    const __m256 v = _mm256_loadu_ps(x + 8 * c);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), exp_mask), exp_mask));
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    ss_lo = _mm256_add_pd(ss_lo, _mm256_mul_pd(lo, lo));
    ss_hi = _mm256_add_pd(ss_hi, _mm256_mul_pd(hi, hi));
  }
  if (!_mm256_testz_si256(bad, bad)) return false;
  const float threshold = threshold_of(reduce(ss_lo, ss_hi), 64);
  const __m256 thr = _mm256_set1_ps(threshold);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256d in_lo = _mm256_setzero_pd(), in_hi = _mm256_setzero_pd();
  __m256d out_lo = _mm256_setzero_pd(), out_hi = _mm256_setzero_pd();
  size_t outer = 0;
  uint8_t* codes = out + sizeof(float);
  for (int c = 0; c < 8; ++c) {
    const __m256 v = _mm256_loadu_ps(x + 8 * c);
    const __m256 a = _mm256_and_ps(v, abs_mask);
    const __m256 m = _mm256_cmp_ps(a, thr, _CMP_GT_OQ);
    const __m256 ao = _mm256_and_ps(a, m), ai = _mm256_andnot_ps(m, a);
    out_lo = _mm256_add_pd(out_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(ao)));
    out_hi = _mm256_add_pd(out_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(ao, 1)));
    in_lo = _mm256_add_pd(in_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(ai)));
    in_hi = _mm256_add_pd(in_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(ai, 1)));
    const uint32_t o = static_cast<uint32_t>(_mm256_movemask_ps(m)), s = static_cast<uint32_t>(_mm256_movemask_ps(v));
    outer += static_cast<size_t>(std::popcount(o));
    const uint16_t word = static_cast<uint16_t>(kSpread.v[(o ^ s) & 0xffu] | kSpread.v[~s & 0xffu] << 1);
    std::memcpy(codes + 2 * c, &word, 2);  // little-endian: values 8c..8c+3 in the first byte
  }
  const float scale = fit_scale(reduce(in_lo, in_hi), reduce(out_lo, out_hi), outer, 64);
  std::memcpy(out, &scale, sizeof(float));
  return true;
}

}  // namespace intellect::int2_kernels
