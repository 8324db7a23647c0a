#include <cmath>

#include "kernels/swiglu.h"

namespace intellect::cpu {

namespace {
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
}  // namespace

void swiglu_forward(float* out, const float* gate_up, int64_t N, int64_t F) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* g = gate_up + n * 2 * F;
    const float* u = g + F;
    for (int64_t i = 0; i < F; ++i)
      out[n * F + i] = static_cast<float>(g[i] * sigmoid(g[i]) * u[i]);
  }
}

void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int64_t F) {
  // silu'(x) = σ(x) (1 + x (1 − σ(x)))
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* g = gate_up + n * 2 * F;
    const float* u = g + F;
    float* dg = dgate_up + n * 2 * F;
    float* du = dg + F;
    for (int64_t i = 0; i < F; ++i) {
      const double x = g[i], sg = sigmoid(x), d = dout[n * F + i];
      du[i] = static_cast<float>(d * x * sg);
      dg[i] = static_cast<float>(d * u[i] * sg * (1.0 + x * (1.0 - sg)));
    }
  }
}

}  // namespace intellect::cpu
