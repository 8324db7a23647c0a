#include <cmath>

#include "kernels/rope.h"
#include "util/error.h"

namespace intellect {

std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const int64_t half = cfg.head_dim / 2;
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    // HF: 1 / theta ** (arange(0, dim, 2).float() / dim), in fp32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(cfg.head_dim);
    inv[i] = static_cast<float>(1.0 / std::pow(cfg.rope_theta, static_cast<double>(expo)));
  }
  const RopeScaling& s = cfg.rope_scaling;
  if (s.type == "llama3") {
    const double old_len = static_cast<double>(s.original_max_position);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    for (int64_t i = 0; i < half; ++i) {
      const double f = inv[i];
      const double wavelen = 2.0 * M_PI / f;
      double out;
      if (wavelen < high_wavelen) {
        out = f;  // high frequencies: unchanged
      } else if (wavelen > low_wavelen) {
        out = f / s.factor;  // low frequencies: stretched by the full factor
      } else {  // in between: interpolate smoothly
        const double smooth = (old_len / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        out = (1.0 - smooth) * f / s.factor + smooth * f;
      }
      inv[i] = static_cast<float>(out);
    }
  } else if (s.type != "none") {
    fail("unsupported rope_scaling type '", s.type, "' (supported: none, llama3)");
  }
  return inv;
}

RopeTable rope_table(const ModelConfig& cfg, int64_t T) {
  RopeTable t;
  t.T = T;
  t.half = cfg.head_dim / 2;
  const std::vector<float> inv = rope_inv_freq(cfg);
  t.cos.resize(T * t.half);
  t.sin.resize(T * t.half);
  for (int64_t p = 0; p < T; ++p)
    for (int64_t i = 0; i < t.half; ++i) {
      const float angle = static_cast<float>(p) * inv[i];
      t.cos[p * t.half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      t.sin[p * t.half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  return t;
}

}  // namespace intellect

namespace intellect::cpu {

void rope_apply(float* x, int64_t B, int64_t T, int64_t n_heads, int64_t row_stride,
                const RopeTable& table, bool inverse) {
  INTELLECT_CHECK(T <= table.T, "rope table too short");
  const int64_t half = table.half;
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const float* c = table.cos.data() + t * half;
      const float* s = table.sin.data() + t * half;
      float* row = x + (b * T + t) * row_stride;
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = row + h * 2 * half;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = v[i], x2 = v[i + half], si = sign * s[i];
          v[i] = x1 * c[i] - x2 * si;
          v[i + half] = x2 * c[i] + x1 * si;
        }
      }
    }
}

}  // namespace intellect::cpu
