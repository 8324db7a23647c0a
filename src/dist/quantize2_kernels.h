// The int2 codec's group encoder, behind quantize2.h: a portable one and an
// AVX2 one for groups of 64 (kInt2DefaultGroup), chosen at run time,
// writing the same bytes for every input (tests/test_quantize2.cpp checks
// it). The same bytes need the same double sums in the same order: both
// keep eight lanes, value i in lane i mod 8, and reduce them alike
// (reduce8). Stateless; any thread may call them.
#pragma once
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "dist/quantize2.h"

namespace intellect::int2_kernels {

constexpr float kMaxScale = FLT_MAX / 2.0f;  // 1.510 · scale stays finite

// Lane k + lane k + 4, then pairwise: the order the AVX2 encoder's two
// 4-lane registers reduce in.
inline double reduce8(const double* s) {
  const double t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
  return (t0 + t1) + (t2 + t3);
}

// A value is outer above this (Lloyd-Max's threshold on the group's RMS).
inline float threshold_of(double sum_sq, size_t len) {
  return static_cast<float>(kInt2Threshold * std::sqrt(sum_sq / static_cast<double>(len)));
}

// The least-squares scale for the chosen codes, Σ|x|·level / Σ level²,
// clamped so the outer level stays finite (a group of values near FLT_MAX
// could fit more; such a pseudo-gradient has diverged anyway).
inline float fit_scale(double inner_abs, double outer_abs, size_t outer, size_t len) {
  const double lo = kInt2Levels[2], hi = kInt2Levels[3];
  const double num = lo * inner_abs + hi * outer_abs;
  const double den = lo * lo * static_cast<double>(len - outer) + hi * hi * static_cast<double>(outer);
  return static_cast<float>(std::clamp(num / den, 0.0, static_cast<double>(kMaxScale)));
}

// One group of len values: scale, then codes. Returns false (nothing
// meaningful written) when a value is NaN/inf.
bool encode_group_portable(const float* x, size_t len, uint8_t* out);
// One group of exactly 64 values, the same bytes; call only when
// int8_kernels::avx2_available().
bool encode_group64_avx2(const float* x, uint8_t* out);

}  // namespace intellect::int2_kernels
