// Linear layers on cuBLAS, bf16 in, fp32 accumulate. cuBLAS is column-major;
// a row-major [R, C] matrix is a column-major [C, R] one, so each product is
// written as its transpose:
//   out = in · wᵀ      ⇔  outᵀ[N,M] = (w as [K,N])ᵀ · inᵀ : gemm(T, N, N, M, K, w, in)
//   din = dout · w     ⇔  dinᵀ[K,M] = wᵀ · doutᵀ : gemm(N, N, K, M, N, w, dout)
//   dw += doutᵀ · in   ⇔  dwᵀ[K,N] = inᵀ · dout  : gemm(N, T, K, N, M, in, dout)
#include <cublas_v2.h>

#include "kernels/cuda_common.cuh"
#include "kernels/matmul.h"

namespace intellect::cuda {

namespace {

const char* status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}

#define CUBLAS_CHECK(expr)                                                                   \
  do {                                                                                       \
    cublasStatus_t st_ = (expr);                                                             \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                        \
      ::intellect::fail("cuBLAS error at ", __FILE__, ":", __LINE__, ": ", #expr, ": ",     \
                        status_name(st_));                                                   \
  } while (0)

int to_int(int64_t x, const char* what) {
  if (x > INT32_MAX) fail("matmul: ", what, " = ", x, " exceeds cuBLAS's 32-bit dimension limit");
  return static_cast<int>(x);
}

}  // namespace

Blas::Blas(cudaStream_t stream, void* workspace, size_t workspace_bytes) {
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  handle_ = h;
  CUBLAS_CHECK(cublasSetStream(h, stream));
  // A fixed workspace: cuBLAS then allocates nothing during the step.
  CUBLAS_CHECK(cublasSetWorkspace(h, workspace, workspace_bytes));
  CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
}

Blas::~Blas() {
  if (handle_) cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

void Blas::forward(bf16* out, const bf16* in, const bf16* w, int64_t M, int64_t N, int64_t K) {
  const float alpha = 1.0f, beta = 0.0f;
  const int m = to_int(N, "N"), n = to_int(M, "M"), k = to_int(K, "K");
  CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(handle_), CUBLAS_OP_T, CUBLAS_OP_N, m, n, k,
                            &alpha, w, CUDA_R_16BF, k, in, CUDA_R_16BF, k, &beta, out, CUDA_R_16BF,
                            m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void Blas::backward(bf16* din, const GradOut& dw, const bf16* dout, const bf16* in, const bf16* w,
                    int64_t M, int64_t N, int64_t K) {
  cublasHandle_t h = static_cast<cublasHandle_t>(handle_);
  const int m_ = to_int(M, "M"), n_ = to_int(N, "N"), k_ = to_int(K, "K");
  if (din) {
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, k_, m_, n_, &alpha, w, CUDA_R_16BF, k_,
                              dout, CUDA_R_16BF, n_, &beta, din, CUDA_R_16BF, k_,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  if (dw.p) {
    // fp32 accumulation inside the GEMM either way; a bf16 gradient is rounded
    // once per micro-batch when it is written.
    const float alpha = 1.0f, beta = dw.accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, k_, n_, m_, &alpha, in, CUDA_R_16BF, k_,
                              dout, CUDA_R_16BF, n_, &beta, dw.p, dw.bf16 ? CUDA_R_16BF : CUDA_R_32F, k_,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace intellect::cuda
