#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cross_entropy.h"
#include "util/error.h"

namespace intellect::cpu {

LossSums cross_entropy(const float* logits, float* dlogits, const int32_t* targets, int64_t N,
                       int64_t V, float z_weight, float grad_scale) {
  for (int64_t n = 0; n < N; ++n)
    if (targets[n] >= V)
      fail("target id ", targets[n], " at position ", n, " is outside the vocabulary [0, ", V, ")");
  std::vector<double> ce(N, 0.0), z(N, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits + n * V;
    float* d = dlogits ? dlogits + n * V : nullptr;
    const int32_t t = targets[n];
    if (t < 0) {
      if (d) std::memset(d, 0, sizeof(float) * V);
      continue;
    }
    int64_t argmax = 0;
    for (int64_t v = 1; v < V; ++v)
      if (l[v] > l[argmax]) argmax = v;
    const double m = l[argmax];
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(l[v]) - m);
    const double lse = m + std::log(sum);
    ce[n] = lse - l[t];
    z[n] = m * m;
    if (d) {
      for (int64_t v = 0; v < V; ++v)
        d[v] = static_cast<float>(std::exp(static_cast<double>(l[v]) - lse) * grad_scale);
      d[t] -= grad_scale;
      // max() passes its gradient to the arg-max entry alone.
      d[argmax] += static_cast<float>(2.0 * z_weight * m * grad_scale);
    }
  }
  LossSums s;
  for (int64_t n = 0; n < N; ++n) {  // in order: the sum does not depend on threads
    if (targets[n] < 0) continue;
    s.ce += ce[n];
    s.z += z[n];
    ++s.n_valid;
  }
  return s;
}

}  // namespace intellect::cpu
