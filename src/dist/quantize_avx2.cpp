// AVX2 int8 block encoder: the same bytes as encode_block_portable, in fewer
// passes and fewer instructions per value. What makes it identical:
// - min/max in any order find the same values; only the sign of a zero can
//   differ, and a zero's sign changes neither the scale, the bias after
//   "+ 0.5f", nor an empty bin's centre. A constant block's table is x[0],
//   as the scalar loop's "strictly less" leaves it.
// - codes use the same float operations in the same order (mul, sub, add,
//   clamp, truncate), never fused: this file enables AVX2 but not FMA.
// - bin sums are accumulated per bin in the same four interleaved streams in
//   the same order, in double; a sum and its count travel as one pair of
//   doubles (the count is exact below 2^53), so a value costs one store
//   instead of two, which is what bounded the scalar histogram.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "dist/quantize.h"
#include "dist/quantize_kernels.h"

namespace intellect::int8_kernels {

bool avx2_available() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}

namespace {

#define INTELLECT_AVX2 __attribute__((target("avx2")))

struct Range {
  float lo, hi;
  bool finite;
};

// One pass: min, max, and whether any value is NaN/inf (its magnitude bits
// reach the all-ones exponent). Four accumulators hide the min/max latency.
INTELLECT_AVX2 Range scan(const float* x, size_t n) {
  __m256 lo[4], hi[4];
  __m256i mag = _mm256_setzero_si256();
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  for (int k = 0; k < 4; ++k) lo[k] = hi[k] = _mm256_set1_ps(x[0]);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int k = 0; k < 4; ++k) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
      lo[k] = _mm256_min_ps(lo[k], v);
      hi[k] = _mm256_max_ps(hi[k], v);
      mag = _mm256_max_epu32(mag, _mm256_and_si256(_mm256_castps_si256(v), abs_mask));
    }
  }
  const __m256 l = _mm256_min_ps(_mm256_min_ps(lo[0], lo[1]), _mm256_min_ps(lo[2], lo[3]));
  const __m256 h = _mm256_max_ps(_mm256_max_ps(hi[0], hi[1]), _mm256_max_ps(hi[2], hi[3]));
  alignas(32) float ls[8], hs[8];
  alignas(32) uint32_t ms[8];
  _mm256_store_ps(ls, l);
  _mm256_store_ps(hs, h);
  _mm256_store_si256(reinterpret_cast<__m256i*>(ms), mag);
  Range r{ls[0], hs[0], true};
  uint32_t m = 0;
  for (int k = 0; k < 8; ++k) {
    r.lo = ls[k] < r.lo ? ls[k] : r.lo;
    r.hi = hs[k] > r.hi ? hs[k] : r.hi;
    m = ms[k] > m ? ms[k] : m;
  }
  for (; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, &x[i], 4);
    m = (b & 0x7fffffffu) > m ? (b & 0x7fffffffu) : m;
    r.lo = x[i] < r.lo ? x[i] : r.lo;
    r.hi = x[i] > r.hi ? x[i] : r.hi;
  }
  r.finite = m < 0x7f800000u;
  return r;
}

// Byte offset of value i's {sum, count} pair in Bins: bin · 64 + stream · 16.
inline uint32_t pair_offset(uint32_t code, size_t i) { return code << 6 | static_cast<uint32_t>(i & 3) << 4; }

// Codes of x[0, n) (x 32-value aligned within its block) with the float map:
// q = x·scale − bias + 0.5, clamped to [0, 255], truncated; and each value's
// pair offset, computed here from the 32-bit codes already in registers so
// the bins need not unpack bytes. 32 values per iteration.
INTELLECT_AVX2 void codes_float(const float* x, size_t n, float scale, float bias, uint8_t* codes,
                                uint32_t* offsets) {
  const __m256 s = _mm256_set1_ps(scale), b = _mm256_set1_ps(bias), half = _mm256_set1_ps(0.5f);
  const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i streams = _mm256_setr_epi32(0, 16, 32, 48, 0, 16, 32, 48);
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      __m256 v = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), s), b);
      v = _mm256_add_ps(v, half);
      v = _mm256_min_ps(_mm256_max_ps(v, zero), top);
      q[k] = _mm256_cvttps_epi32(v);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(offsets + i + 8 * k),
                          _mm256_or_si256(_mm256_slli_epi32(q[k], 6), streams));
    }
    // packs work within 128-bit lanes: the permute restores value order.
    const __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), _mm256_permutevar8x32_epi32(w, order));
  }
  for (; i < n; ++i) {
    float q = x[i] * scale - bias + 0.5f;
    q = q < 0.0f ? 0.0f : q;
    q = q > 255.0f ? 255.0f : q;
    codes[i] = static_cast<uint8_t>(static_cast<int32_t>(q));
    offsets[i] = pair_offset(codes[i], i);
  }
}

// Per bin and stream: {sum, count}. Stream k takes values i ≡ k (mod 4) below
// the last whole group of four; the remainder goes to stream 0, as in the
// scalar code, so every bin's four sums see the same values in the same order.
struct alignas(64) Bins {
  double pair[kInt8Bins][4][2];
};

// Adds x[i, i + len) (i and len multiples of 4) to the bins at their offsets.
INTELLECT_AVX2 void add_groups(const float* x, const uint32_t* offsets, size_t len, Bins& h) {
  const __m256d one = _mm256_set1_pd(1.0);
  char* base = reinterpret_cast<char*>(h.pair);
  for (size_t i = 0; i < len; i += 4) {
    const __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
    const __m256d even = _mm256_unpacklo_pd(d, one);  // {x0, 1, x2, 1}
    const __m256d odd = _mm256_unpackhi_pd(d, one);   // {x1, 1, x3, 1}
    double* e0 = reinterpret_cast<double*>(base + offsets[i]);
    double* e1 = reinterpret_cast<double*>(base + offsets[i + 1]);
    double* e2 = reinterpret_cast<double*>(base + offsets[i + 2]);
    double* e3 = reinterpret_cast<double*>(base + offsets[i + 3]);
    _mm_store_pd(e0, _mm_add_pd(_mm_load_pd(e0), _mm256_castpd256_pd128(even)));
    _mm_store_pd(e1, _mm_add_pd(_mm_load_pd(e1), _mm256_castpd256_pd128(odd)));
    _mm_store_pd(e2, _mm_add_pd(_mm_load_pd(e2), _mm256_extractf128_pd(even, 1)));
    _mm_store_pd(e3, _mm_add_pd(_mm_load_pd(e3), _mm256_extractf128_pd(odd, 1)));
  }
}

}  // namespace

INTELLECT_AVX2 void encode_block_avx2(const float* x, size_t n, uint8_t* out) {
  if (n == 0) return encode_block_portable(x, n, out);
  const Range r = scan(x, n);
  if (!r.finite) return encode_block_portable(x, n, out);  // it names the value and throws
  uint8_t* codes = out + kInt8TableBytes;
  float table[kInt8Bins];
  if (r.lo == r.hi) {
    std::memset(codes, 0, n);
    for (auto& t : table) t = x[0];
    std::memcpy(out, table, kInt8TableBytes);
    return;
  }
  const double range = static_cast<double>(r.hi) - static_cast<double>(r.lo);
  const double scale_d = 255.0 / range;
  const float scale = static_cast<float>(scale_d);
  const float bias = static_cast<float>(static_cast<double>(r.lo) * scale_d);
  const bool float_map = std::isfinite(scale) && std::isfinite(bias);

  // Codes then bins, a chunk at a time, so the bins read x and the codes from L1.
  Bins h;  // 16 KB: stays in L1 beside the chunk
  std::memset(&h, 0, sizeof h);
  constexpr size_t kChunk = 2048;  // a multiple of 32 and of 4
  uint32_t offsets[kChunk];
  const size_t whole = n & ~size_t{3};
  for (size_t c = 0; c < n; c += kChunk) {
    const size_t len = n - c < kChunk ? n - c : kChunk;
    if (float_map) {
      codes_float(x + c, len, scale, bias, codes + c, offsets);
    } else {  // a range of a few denormals: the scalar code's double map
      for (size_t i = c; i < c + len; ++i) {
        double q = (static_cast<double>(x[i]) - r.lo) * scale_d + 0.5;
        q = q < 0.0 ? 0.0 : (q > 255.0 ? 255.0 : q);
        codes[i] = static_cast<uint8_t>(static_cast<int32_t>(q));
        offsets[i - c] = pair_offset(codes[i], i);
      }
    }
    add_groups(x + c, offsets, (c + len <= whole ? len : whole - c), h);
  }
  for (size_t i = whole; i < n; ++i) {
    h.pair[codes[i]][0][0] += x[i];
    h.pair[codes[i]][0][1] += 1.0;
  }
  for (size_t b = 0; b < kInt8Bins; ++b) {
    const double s = (h.pair[b][0][0] + h.pair[b][1][0]) + (h.pair[b][2][0] + h.pair[b][3][0]);
    const double c = (h.pair[b][0][1] + h.pair[b][1][1]) + (h.pair[b][2][1] + h.pair[b][3][1]);
    table[b] = c != 0.0 ? static_cast<float>(s / c)
                        : static_cast<float>(r.lo + range * (static_cast<double>(b) / 255.0));
  }
  std::memcpy(out, table, kInt8TableBytes);
}

}  // namespace intellect::int8_kernels
