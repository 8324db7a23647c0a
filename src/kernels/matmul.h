// Linear layers: out = in · wᵀ with w stored [out_features, in_features], as
// in HuggingFace. The CPU twin is an fp32 reference: each output element is
// summed in a fixed k order, so results do not depend on the thread count.
#pragma once
#include <cstdint>

namespace intellect::cpu {

// out[M,N] = in[M,K] · w[N,K]ᵀ
void matmul_forward(float* out, const float* in, const float* w, int64_t M, int64_t N, int64_t K);

// din[M,K] = dout[M,N] · w[N,K] (overwritten; skipped when din is null)
// dw[N,K] += dout[M,N]ᵀ · in[M,K] (accumulated, so micro-batches add up)
void matmul_backward(float* din, float* dw, const float* dout, const float* in, const float* w,
                     int64_t M, int64_t N, int64_t K);

// C[M,N] (+)= A[M,K] · B[K,N], all row-major and dense. The building block of
// the two above, exposed for tests.
void gemm_nn(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
             bool accumulate);

}  // namespace intellect::cpu
