#include <cmath>
#include <vector>

#include "kernels/adamw.h"

namespace intellect::cpu {

void adamw_update(float* p, const float* g, float* m, float* v, size_t n, const AdamWStep& s) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(s.beta1), static_cast<double>(s.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(s.beta2), static_cast<double>(s.step));
  const float step_size = static_cast<float>(s.lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.0f - s.lr * s.weight_decay;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i] * s.grad_scale;
    m[i] = s.beta1 * m[i] + (1.0f - s.beta1) * gi;
    v[i] = s.beta2 * v[i] + (1.0f - s.beta2) * gi * gi;
    const float denom = std::sqrt(v[i]) / bc2_sqrt + s.eps;
    p[i] = p[i] * decay - step_size * (m[i] / denom);
  }
}

double sum_squares(const float* g, size_t n) {
  constexpr size_t kChunk = 1 << 16;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(chunks, 0.0);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < chunks; ++c) {
    const size_t end = (c + 1) * kChunk < n ? (c + 1) * kChunk : n;
    double s = 0.0;
    for (size_t i = c * kChunk; i < end; ++i) s += static_cast<double>(g[i]) * g[i];
    part[c] = s;
  }
  double total = 0.0;
  for (double x : part) total += x;
  return total;
}

}  // namespace intellect::cpu
