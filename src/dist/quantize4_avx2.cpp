// AVX2 int4 group encoder and decoders: the same bytes as
// encode_group_portable, the same values as the scalar decoders.
// - max|x| is taken as the unsigned maximum of the values' magnitude bits:
//   for non-negative finite floats the bit order is the value order, the
//   result is the same float, and a magnitude at or above the all-ones
//   exponent is the NaN/inf check, in the same operation.
// - codes use the same float operations in the same order (mul, clamp to
//   [-7, 7], + 8.5, truncate); this file enables AVX2 but not FMA.
// - a group whose 7 / max|x| overflows float (a denormal max) goes to the
//   portable encoder, which does that case in double.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "dist/quantize4_kernels.h"

namespace intellect::int4_kernels {

namespace {

#define INTELLECT_AVX2 __attribute__((target("avx2")))

// The largest magnitude's bits over x[0, len).
INTELLECT_AVX2 uint32_t max_magnitude_bits(const float* x, size_t len) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  __m256i m = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= len; i += 8)
    m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), abs_mask));
  __m128i h = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xb1));
  uint32_t r = static_cast<uint32_t>(_mm_cvtsi128_si32(h));
  for (; i < len; ++i) {
    uint32_t b;
    std::memcpy(&b, &x[i], 4);
    b &= 0x7fffffffu;
    r = b > r ? b : r;
  }
  return r;
}

INTELLECT_AVX2 inline __m256i codes8(const float* x, __m256 inv) {
  const __m256 lo = _mm256_set1_ps(-7.0f), hi = _mm256_set1_ps(7.0f), off = _mm256_set1_ps(8.5f);
  __m256 q = _mm256_mul_ps(_mm256_loadu_ps(x), inv);
  q = _mm256_min_ps(_mm256_max_ps(q, lo), hi);
  return _mm256_cvttps_epi32(_mm256_add_ps(q, off));
}

// One group with a finite float inverse scale: codes two per byte, low nibble first.
INTELLECT_AVX2 void pack(const float* x, size_t len, float inv, uint8_t* codes) {
  const __m256 v = _mm256_set1_ps(inv);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i nibbles = _mm256_set1_epi16(0x1001);  // byte pairs (a, b) -> a + 16·b
  size_t i = 0;
  for (; i + 32 <= len; i += 32) {
    const __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(codes8(x + i, v), codes8(x + i + 8, v)),
                                          _mm256_packs_epi32(codes8(x + i + 16, v), codes8(x + i + 24, v)));
    const __m256i c = _mm256_permutevar8x32_epi32(w, order);   // 32 codes in order
    const __m256i p = _mm256_maddubs_epi16(c, nibbles);         // 16 bytes' worth, as int16
    const __m256i b = _mm256_permute4x64_epi64(_mm256_packus_epi16(p, p), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i / 2), _mm256_castsi256_si128(b));
  }
  auto code = [inv](float f) {
    float q = f * inv;
    q = q < -7.0f ? -7.0f : (q > 7.0f ? 7.0f : q);
    return static_cast<uint32_t>(static_cast<int32_t>(q + 8.5f));
  };
  for (; i + 2 <= len; i += 2) codes[i / 2] = static_cast<uint8_t>(code(x[i]) | (code(x[i + 1]) << 4));
  if (i < len) codes[i / 2] = static_cast<uint8_t>(code(x[i]));
}

// One group's values, 16 a step: (code − 8) · scale, converted and multiplied
// exactly as the scalar loop does, then stored or added.
template <bool kAdd>
INTELLECT_AVX2 void decode_group(const uint8_t* codes, size_t len, float scale, float* o) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i eight = _mm256_set1_epi32(8);
  const __m128i low = _mm_set1_epi8(0x0f);
  size_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i / 2));
    const __m128i c = _mm_unpacklo_epi8(_mm_and_si128(b, low), _mm_and_si128(_mm_srli_epi16(b, 4), low));
    for (int h = 0; h < 2; ++h) {
      const __m256i k = _mm256_sub_epi32(_mm256_cvtepu8_epi32(h ? _mm_srli_si128(c, 8) : c), eight);
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(k), s);
      if constexpr (kAdd) v = _mm256_add_ps(_mm256_loadu_ps(o + i + 8 * h), v);
      _mm256_storeu_ps(o + i + 8 * h, v);
    }
  }
  for (; i < len; ++i) {
    const int nibble = (codes[i / 2] >> (4 * (i & 1))) & 0xf;
    const float v = static_cast<float>(nibble - 8) * scale;
    if constexpr (kAdd) o[i] += v;
    else o[i] = v;
  }
}

template <bool kAdd>
INTELLECT_AVX2 void decode_groups(const uint8_t* in, size_t n, size_t group, float* out) {
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = n - begin < group ? n - begin : group;
    float scale;
    std::memcpy(&scale, in, 4);
    decode_group<kAdd>(in + 4, len, scale, out + begin);
    in += 4 + (len + 1) / 2;
  }
}

}  // namespace

INTELLECT_AVX2 void decode_avx2(const uint8_t* in, size_t n, size_t group, float* out) {
  decode_groups<false>(in, n, group, out);
}
INTELLECT_AVX2 void decode_add_avx2(const uint8_t* in, size_t n, size_t group, float* acc) {
  decode_groups<true>(in, n, group, acc);
}

INTELLECT_AVX2 size_t encode_avx2(const float* x, size_t n, size_t group, uint8_t* out) {
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = n - begin < group ? n - begin : group;
    const float* g = x + begin;
    const uint32_t bits = max_magnitude_bits(g, len);
    if (bits >= 0x7f800000u) return begin;
    float amax;
    std::memcpy(&amax, &bits, 4);
    const float inv = static_cast<float>(7.0 / static_cast<double>(amax));
    if (amax == 0.0f || !std::isfinite(inv)) {
      out += encode_group_portable(g, len, out);
      continue;
    }
    const float scale = amax / 7.0f;
    std::memcpy(out, &scale, 4);
    pack(g, len, inv, out + 4);
    out += 4 + (len + 1) / 2;
  }
  return n;
}

}  // namespace intellect::int4_kernels
