// RMSNorm: y = x / sqrt(mean(x²) + eps) * w, per row of D features.
#pragma once
#include <cstdint>

namespace intellect::cpu {

// rstd[n] = 1/sqrt(mean(x[n]²) + eps) is kept for the backward pass.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t D,
                     float eps);
// dx (+)= ∂L/∂x (accumulated when `accumulate`, which is how the residual
// stream's gradient is added in); dw += ∂L/∂w.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t D, bool accumulate);

}  // namespace intellect::cpu
