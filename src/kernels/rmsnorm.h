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

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// The residual add fused with the norm that follows it:
//   resid_out = a + b;  norm_out = rmsnorm(resid_out) * w;  rstd kept for backward.
// With b == nullptr there is no add: the norm reads a and resid_out is unused.
void residual_rmsnorm_forward(bf16* resid_out, bf16* norm_out, float* rstd, const bf16* a,
                              const bf16* b, const bf16* w, int64_t N, int64_t D, float eps,
                              cudaStream_t stream);
// dx (+)= ∂L/∂x; dw (+)= ∂L/∂w through per-block partial sums in `scratch`
// (rmsnorm_backward_scratch_floats(N, D) floats) reduced in a fixed order
// (fp32 or bf16, added or overwritten: see GradOut).
void rmsnorm_backward(bf16* dx, const GradOut& dw, float* scratch, const bf16* dout, const bf16* x,
                      const bf16* w, const float* rstd, int64_t N, int64_t D, bool accumulate,
                      cudaStream_t stream);
size_t rmsnorm_backward_scratch_floats(int64_t N, int64_t D);
}  // namespace intellect::cuda
#endif
