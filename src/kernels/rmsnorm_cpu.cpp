#include <cmath>

#include "kernels/rmsnorm.h"

namespace intellect::cpu {

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t D,
                     float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * D;
    double ss = 0.0;
    for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(xr[d]) * xr[d];
    const float r = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
    rstd[n] = r;
    float* o = out + n * D;
    for (int64_t d = 0; d < D; ++d) o[d] = w[d] * (xr[d] * r);
  }
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t D, bool accumulate) {
  // y_d = w_d x_d r, r = (mean(x²)+eps)^(-1/2), ∂r/∂x_j = -r³ x_j / D, so
  // dx_j = r w_j g_j - (r³/D) x_j Σ_d g_d w_d x_d.
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * D;
    const float* g = dout + n * D;
    const double r = rstd[n];
    double dot = 0.0;
    for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(g[d]) * w[d] * xr[d];
    const double c = r * r * r * dot / D;
    float* o = dx + n * D;
    for (int64_t d = 0; d < D; ++d) {
      const float v = static_cast<float>(r * w[d] * g[d] - c * xr[d]);
      o[d] = accumulate ? o[d] + v : v;
    }
  }
  // The weight gradient sums over rows: split by columns, rows in order.
#pragma omp parallel for schedule(static)
  for (int64_t d = 0; d < D; ++d) {
    double s = 0.0;
    for (int64_t n = 0; n < N; ++n) s += static_cast<double>(dout[n * D + d]) * x[n * D + d] * rstd[n];
    dw[d] += static_cast<float>(s);
  }
}

}  // namespace intellect::cpu
