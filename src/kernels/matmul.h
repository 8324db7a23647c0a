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

#ifdef INTELLECT_HAVE_CUDA
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda_types.h"
namespace intellect::cuda {
// Linear layers on cuBLAS: bf16 operands, fp32 accumulation. Weight gradients
// go to an fp32 buffer (beta = 1 adds micro-batches up without loss) or a
// bf16 one (rounded once per write), overwritten or added to (GradOut).
class Blas {
 public:
  Blas(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  // out[M,N] = in[M,K] · w[N,K]ᵀ
  void forward(bf16* out, const bf16* in, const bf16* w, int64_t M, int64_t N, int64_t K);
  // din[M,K] = dout · w (skipped when null); dw[N,K] (+)= doutᵀ · in (skipped when dw.p is null)
  void backward(bf16* din, const GradOut& dw, const bf16* dout, const bf16* in, const bf16* w, int64_t M,
                int64_t N, int64_t K);
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

  // FP8 products (precision.matmul "fp8", Hopper; kernels/fp8.h makes the
  // operands): FP8 inputs with their inverse scales on the device, fp32
  // accumulation, bf16 out. cuBLASLt's FP8 kernels take both operands with
  // the reduction dimension contiguous, hence the transposed weight for din.
  // Every dimension must be a multiple of 16 (fails otherwise).
  // out[M,N] = in8[M,K] · w8[N,K]ᵀ, both E4M3; the accumulation is cuBLAS's
  // fast one, as torchao's forward.
  void forward_fp8(bf16* out, const uint8_t* in8, const float* in_scale_inv, const uint8_t* w8,
                   const float* w_scale_inv, int64_t M, int64_t N, int64_t K);
  // din[M,K] = dout8[M,N] · w[N,K], with dout8 E5M2 and w given as wt8[K,N], E4M3.
  void input_grad_fp8(bf16* din, const uint8_t* dout8, const float* dout_scale_inv, const uint8_t* wt8,
                      const float* w_scale_inv, int64_t M, int64_t N, int64_t K);
  // dw[N,K] (+)= doutᵀ · in over the M tokens, both operands given transposed
  // (tokens contiguous, as cuBLASLt's FP8 kernels take the reduction
  // dimension): dout_t8[N,M] E5M2, in_t8[K,M] E4M3; fp32 or bf16 out as dw says.
  void weight_grad_fp8(const GradOut& dw, const uint8_t* dout_t8, const float* dout_scale_inv, const uint8_t* in_t8,
                       const float* in_scale_inv, int64_t M, int64_t N, int64_t K);

  // One GEMM the model will run, as forward(M, N, K) or backward(M, N, K)
  // name them; dw_bf16/dw_accumulate select the weight-gradient variant.
  struct Shape {
    int64_t M, N, K;
    bool dw_bf16 = false, dw_accumulate = true;
  };
  // Times the candidates cuBLASLt's heuristics offer for each product these
  // shapes imply (forward, dX, dW) on scratch buffers it allocates and frees,
  // and keeps the fastest; products not tuned run with cuBLAS's default
  // choice. Returns a line for the log. Only with INTELLECT_GEMM_TUNE=1: a
  // choice by timing is not reproducible from one process to the next.
  std::string tune(const std::vector<Shape>& shapes);

  struct Tuned;  // cuBLASLt descriptors and the chosen algorithm of one product

 private:
  struct Key {
    bool ta, tb;
    int m, n, k;
    bool c_f32, beta1;
    bool operator<(const Key& o) const;
  };
  // C = A·B (cuBLAS column-major, as gemm(ta, tb, m, n, k, A, lda, B, ldb, C, ldc)):
  // the tuned product when there is one, else cublasGemmEx.
  void gemm(bool ta, bool tb, int m, int n, int k, const void* A, int lda, const void* B, int ldb, void* C,
            int ldc, bool c_f32, bool beta1);
  struct Fp8Key {
    int m, n, k;
    bool b_e5m2, fast_accum;
    bool d_f32 = false, beta1 = false;  // D (and C) fp32 instead of bf16; D += rather than D =
    int align = 256;  // the operands' common pointer alignment, bytes (the heuristics choose for it)
    bool operator<(const Fp8Key& o) const;
  };
  // D[m,n] (+)= Aᵀ·B (column-major), A [k,m] E4M3, B [k,n] E4M3 or E5M2, D bf16 or fp32.
  void gemm_fp8(Fp8Key key, const void* A, const float* a_scale_inv, const void* B, const float* b_scale_inv,
                void* D);
  std::map<Fp8Key, std::shared_ptr<Tuned>> fp8_;
  void* handle_ = nullptr;     // cublasHandle_t
  void* lt_ = nullptr;         // cublasLtHandle_t
  void* stream_ = nullptr;     // cudaStream_t
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, std::shared_ptr<Tuned>> tuned_;
};
}  // namespace intellect::cuda
#endif
