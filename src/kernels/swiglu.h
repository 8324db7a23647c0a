// SwiGLU on the output of the fused gate|up GEMM: each row of `gate_up` holds
// F gate values then F up values; out = silu(gate) * up.
#pragma once
#include <cstdint>

namespace intellect::cpu {

void swiglu_forward(float* out, const float* gate_up, int64_t N, int64_t F);
// dgate_up [N, 2F] is overwritten.
void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int64_t F);

}  // namespace intellect::cpu

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
void swiglu_forward(bf16* out, const bf16* gate_up, int64_t N, int64_t F, cudaStream_t stream);
void swiglu_backward(bf16* dgate_up, const bf16* dout, const bf16* gate_up, int64_t N, int64_t F,
                     cudaStream_t stream);
}  // namespace intellect::cuda
#endif
