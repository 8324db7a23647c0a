// Linear layers on cuBLAS, bf16 in, fp32 accumulate. cuBLAS is column-major;
// a row-major [R, C] matrix is a column-major [C, R] one, so each product is
// written as its transpose:
//   out = in · wᵀ      ⇔  outᵀ[N,M] = (w as [K,N])ᵀ · inᵀ : gemm(T, N, N, M, K, w, in)
//   din = dout · w     ⇔  dinᵀ[K,M] = wᵀ · doutᵀ : gemm(N, N, K, M, N, w, dout)
//   dw += doutᵀ · in   ⇔  dwᵀ[K,N] = inᵀ · dout  : gemm(N, T, K, N, M, in, dout)
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include <cstdio>
#include <tuple>

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

// One tuned product: the cuBLASLt descriptors and the algorithm that won.
struct Blas::Tuned {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::vector<cublasLtMatmulAlgo_t> candidates;  // FP8: the heuristics' offers, until one has run
  ~Tuned() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

bool Blas::Key::operator<(const Key& o) const {
  return std::tie(ta, tb, m, n, k, c_f32, beta1) < std::tie(o.ta, o.tb, o.m, o.n, o.k, o.c_f32, o.beta1);
}

Blas::Blas(cudaStream_t stream, void* workspace, size_t workspace_bytes)
    : stream_(stream), workspace_(workspace), workspace_bytes_(workspace_bytes) {
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  handle_ = h;
  CUBLAS_CHECK(cublasSetStream(h, stream));
  // A fixed workspace: cuBLAS then allocates nothing during the step.
  CUBLAS_CHECK(cublasSetWorkspace(h, workspace, workspace_bytes));
  CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  cublasLtHandle_t lt = nullptr;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  lt_ = lt;
}

Blas::~Blas() {
  tuned_.clear();
  fp8_.clear();
  if (lt_) cublasLtDestroy(static_cast<cublasLtHandle_t>(lt_));
  if (handle_) cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

void Blas::gemm(bool ta, bool tb, int m, int n, int k, const void* A, int lda, const void* B, int ldb, void* C,
                int ldc, bool c_f32, bool beta1) {
  const float alpha = 1.0f, beta = beta1 ? 1.0f : 0.0f;
  const auto it = tuned_.find(Key{ta, tb, m, n, k, c_f32, beta1});
  if (it != tuned_.end()) {
    const Tuned& t = *it->second;
    CUBLAS_CHECK(cublasLtMatmul(static_cast<cublasLtHandle_t>(lt_), t.desc, &alpha, A, t.a, B, t.b, &beta, C, t.c,
                                C, t.c, &t.algo, workspace_, workspace_bytes_,
                                static_cast<cudaStream_t>(stream_)));
    return;
  }
  CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(handle_), ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                            tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A, CUDA_R_16BF, lda, B, CUDA_R_16BF,
                            ldb, &beta, C, c_f32 ? CUDA_R_32F : CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

void Blas::forward(bf16* out, const bf16* in, const bf16* w, int64_t M, int64_t N, int64_t K) {
  const int m = to_int(N, "N"), n = to_int(M, "M"), k = to_int(K, "K");
  gemm(true, false, m, n, k, w, k, in, k, out, m, false, false);
}

void Blas::backward(bf16* din, const GradOut& dw, const bf16* dout, const bf16* in, const bf16* w,
                    int64_t M, int64_t N, int64_t K) {
  const int m_ = to_int(M, "M"), n_ = to_int(N, "N"), k_ = to_int(K, "K");
  if (din) gemm(false, false, k_, m_, n_, w, k_, dout, n_, din, k_, false, false);
  // fp32 accumulation inside the GEMM either way; a bf16 gradient is rounded
  // once per micro-batch when it is written.
  if (dw.p) gemm(false, true, k_, n_, m_, in, k_, dout, n_, dw.p, k_, !dw.bf16, dw.accumulate);
}

bool Blas::Fp8Key::operator<(const Fp8Key& o) const {
  return std::tie(m, n, k, b_e5m2, fast_accum, d_f32, beta1, align) <
         std::tie(o.m, o.n, o.k, o.b_e5m2, o.fast_accum, o.d_f32, o.beta1, o.align);
}

// The descriptors and cuBLASLt's first-ranked algorithm for each FP8 shape,
// made at its first use (the warm-up step) and kept: a step after it only
// points the descriptor at this call's scales.
void Blas::gemm_fp8(Fp8Key key, const void* A, const float* a_scale_inv, const void* B,
                    const float* b_scale_inv, void* D) {
  cublasLtHandle_t lt = static_cast<cublasLtHandle_t>(lt_);
  // The heuristics assume 256-byte aligned operands unless told otherwise, and
  // an algorithm chosen so refuses a less aligned pointer (NOT_SUPPORTED):
  // the key carries the alignment the pointers actually have.
  const uintptr_t bits = reinterpret_cast<uintptr_t>(A) | reinterpret_cast<uintptr_t>(B) |
                         reinterpret_cast<uintptr_t>(D) | uintptr_t{256};
  key.align = static_cast<int>(bits & (~bits + 1));
  std::shared_ptr<Tuned>& slot = fp8_[key];
  if (!slot) {
    if (key.m % 16 || key.n % 16 || key.k % 16 || key.align < 16)
      fail("FP8 matmul: every dimension must be a multiple of 16 for cuBLASLt's FP8 kernels (m=", key.m,
           ", n=", key.n, ", k=", key.k, ") and every operand 16-byte aligned (their common alignment is ",
           key.align, " bytes); use precision.matmul \"bf16\" for this shape");
    auto t = std::make_shared<Tuned>();
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&t->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opa = CUBLAS_OP_T, opb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
    const int8_t fast = key.fast_accum ? 1 : 0;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
    // Any device pointer while the algorithm is chosen; each call sets its own.
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale_inv,
                                                sizeof(a_scale_inv)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale_inv,
                                                sizeof(b_scale_inv)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&t->a, CUDA_R_8F_E4M3, key.k, key.m, key.k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&t->b, key.b_e5m2 ? CUDA_R_8F_E5M2 : CUDA_R_8F_E4M3, key.k, key.n, key.k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&t->c, key.d_f32 ? CUDA_R_32F : CUDA_R_16BF, key.m, key.n, key.m));
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = workspace_bytes_;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const uint32_t align = static_cast<uint32_t>(key.align);
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
    cublasLtMatmulHeuristicResult_t cand[8]{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, t->desc, t->a, t->b, t->c, t->c, pref, 8, cand, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      fail("FP8 matmul: cuBLASLt offers no FP8 algorithm for m=", key.m, " n=", key.n, " k=", key.k, " (",
           status_name(st), "); FP8 GEMMs need a Hopper GPU (compute capability 9.0) or newer; use "
           "precision.matmul \"bf16\"");
    for (int i = 0; i < found; ++i) t->candidates.push_back(cand[i].algo);
    slot = std::move(t);
  }
  Tuned& t = *slot;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale_inv,
                                              sizeof(a_scale_inv)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale_inv,
                                              sizeof(b_scale_inv)));
  const float alpha = 1.0f, beta = key.beta1 ? 1.0f : 0.0f;
  auto run = [&](const cublasLtMatmulAlgo_t* algo) {
    return cublasLtMatmul(lt, t.desc, &alpha, A, t.a, B, t.b, &beta, D, t.c, D, t.c, algo, workspace_,
                          workspace_bytes_, static_cast<cudaStream_t>(stream_));
  };
  if (t.candidates.empty()) {
    CUBLAS_CHECK(run(&t.algo));
    return;
  }
  // First use: the first of the heuristics' candidates that runs is kept
  // (a refusal is returned before anything is launched).
  cublasStatus_t st = CUBLAS_STATUS_NOT_SUPPORTED;
  for (const cublasLtMatmulAlgo_t& algo : t.candidates) {
    st = run(&algo);
    if (st == CUBLAS_STATUS_SUCCESS) {
      t.algo = algo;
      t.candidates.clear();
      return;
    }
  }
  auto align = [](const void* p) { return static_cast<int>(reinterpret_cast<uintptr_t>(p) & 255); };
  fail("FP8 matmul: cuBLASLt refused all ", t.candidates.size(), " algorithms it offered for m=", key.m,
       " n=", key.n, " k=", key.k, " (", status_name(st), "; pointer offsets mod 256: A ", align(A), ", B ",
       align(B), ", D ", align(D), ", scales ", align(a_scale_inv), " and ", align(b_scale_inv),
       "); use precision.matmul \"bf16\"");
}

//   out = in · wᵀ  ⇔  outᵀ[N,M] = (w8 as [K,N])ᵀ · (in8 as [K,M])
void Blas::forward_fp8(bf16* out, const uint8_t* in8, const float* in_scale_inv, const uint8_t* w8,
                       const float* w_scale_inv, int64_t M, int64_t N, int64_t K) {
  gemm_fp8({to_int(N, "N"), to_int(M, "M"), to_int(K, "K"), false, true}, w8, w_scale_inv, in8, in_scale_inv, out);
}

//   din = dout · w  ⇔  dinᵀ[K,M] = (wt8 as [N,K])ᵀ · (dout8 as [N,M])
void Blas::input_grad_fp8(bf16* din, const uint8_t* dout8, const float* dout_scale_inv, const uint8_t* wt8,
                          const float* w_scale_inv, int64_t M, int64_t N, int64_t K) {
  gemm_fp8({to_int(K, "K"), to_int(M, "M"), to_int(N, "N"), true, false}, wt8, w_scale_inv, dout8, dout_scale_inv,
           din);
}

//   dw[N,K] (+)= doutᵀ·in  ⇔  dwᵀ[K,N] (+)= (in_t8 as [M,K])ᵀ · (dout_t8 as [M,N])
void Blas::weight_grad_fp8(const GradOut& dw, const uint8_t* dout_t8, const float* dout_scale_inv, const uint8_t* in_t8,
                           const float* in_scale_inv, int64_t M, int64_t N, int64_t K) {
  if (!dw.p) return;
  Fp8Key key{to_int(K, "K"), to_int(N, "N"), to_int(M, "M"), true, false};
  key.d_f32 = !dw.bf16;
  key.beta1 = dw.accumulate;
  gemm_fp8(key, in_t8, in_scale_inv, dout_t8, dout_scale_inv, dw.p);
}

namespace {

// Scratch operands for timing: small pseudo-random values (zeros would run
// faster than real data and could rank the candidates differently).
__global__ void fill_kernel(bf16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 0x9E3779B9u ^ seed;
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    x ^= x >> 12;
    p[i] = __float2bfloat16((static_cast<float>(x & 0xffff) / 65536.0f - 0.5f) * 0.1f);
  }
}

}  // namespace

std::string Blas::tune(const std::vector<Shape>& shapes) {
  // Off unless asked for: the winner is picked by timing, so two processes
  // can pick different algorithms (different rounding) and a resumed run
  // would no longer repeat the one it resumes bit for bit; and on the 10B
  // step it measured no gain (docs/PERFORMANCE.md).
  const char* env = std::getenv("INTELLECT_GEMM_TUNE");
  const std::string mode = env ? env : "";
  if (mode != "1" && mode != "sustained")
    return "GEMM tuning off (INTELLECT_GEMM_TUNE=1 or =sustained turns it on): cuBLAS's default choices";
  // "sustained" times each candidate for about 150 ms in a row instead of 3
  // runs: a whole training step holds the GPU at its power cap, where the
  // candidate that wins a short burst at boost clocks need not win (a
  // faster choice by 3 runs did not make the 10B step faster).
  const bool sustained = mode == "sustained";
  const auto t0 = std::chrono::steady_clock::now();
  // Every product the shapes imply, in cuBLAS's column-major terms (see the top of this file).
  struct Product {
    Key key;
    int lda, ldb, ldc;
  };
  std::vector<Product> products;
  auto add = [&](const Key& k, int lda, int ldb, int ldc) {
    for (const Product& p : products)
      if (!(p.key < k) && !(k < p.key)) return;
    products.push_back({k, lda, ldb, ldc});
  };
  size_t a_max = 0, b_max = 0, c_max = 0;
  for (const Shape& s : shapes) {
    const int M = to_int(s.M, "M"), N = to_int(s.N, "N"), K = to_int(s.K, "K");
    add({true, false, N, M, K, false, false}, K, K, N);                       // out = in · wᵀ
    add({false, false, K, M, N, false, false}, K, N, K);                      // din = dout · w
    add({false, true, K, N, M, !s.dw_bf16, s.dw_accumulate}, K, N, K);        // dw (+)= doutᵀ · in
    a_max = std::max({a_max, size_t(N) * K, size_t(M) * K});
    b_max = std::max({b_max, size_t(M) * K, size_t(M) * N});
    c_max = std::max({c_max, size_t(N) * M, size_t(K) * M, size_t(K) * N * 2});  // fp32 dW counts twice
  }
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  void *A = nullptr, *B = nullptr, *C = nullptr;
  CUDA_CHECK(cudaMalloc(&A, a_max * sizeof(bf16)));
  CUDA_CHECK(cudaMalloc(&B, b_max * sizeof(bf16)));
  CUDA_CHECK(cudaMalloc(&C, c_max * sizeof(bf16)));
  fill_kernel<<<1024, 256, 0, stream>>>(static_cast<bf16*>(A), a_max, 1);
  fill_kernel<<<1024, 256, 0, stream>>>(static_cast<bf16*>(B), b_max, 2);
  fill_kernel<<<1024, 256, 0, stream>>>(static_cast<bf16*>(C), c_max, 3);
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  cublasLtHandle_t lt = static_cast<cublasLtHandle_t>(lt_);
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t ws = workspace_bytes_;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  double default_ms = 0, best_ms = 0;
  int improved = 0;
  for (const Product& p : products) {
    const Key& k = p.key;
    auto t = std::make_shared<Tuned>();
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&t->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opa = k.ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = k.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(t->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&t->a, CUDA_R_16BF, k.ta ? k.k : k.m, k.ta ? k.m : k.k, p.lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&t->b, CUDA_R_16BF, k.tb ? k.n : k.k, k.tb ? k.k : k.n, p.ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&t->c, k.c_f32 ? CUDA_R_32F : CUDA_R_16BF, k.m, k.n, p.ldc));
    cublasLtMatmulHeuristicResult_t cand[16];
    int found = 0;
    if (cublasLtMatmulAlgoGetHeuristic(lt, t->desc, t->a, t->b, t->c, t->c, pref, 16, cand, &found) !=
            CUBLAS_STATUS_SUCCESS || found == 0)
      continue;  // this product keeps cublasGemmEx
    const float alpha = 1.0f, beta = k.beta1 ? 1.0f : 0.0f;
    auto time_algo = [&](const cublasLtMatmulAlgo_t* algo, int reps) -> double {
      for (int r = -1; r < reps; ++r) {  // one warm-up
        if (r == 0) CUDA_CHECK(cudaEventRecord(e0, stream));
        if (algo) {
          if (cublasLtMatmul(lt, t->desc, &alpha, A, t->a, B, t->b, &beta, C, t->c, C, t->c, algo, workspace_,
                             workspace_bytes_, stream) != CUBLAS_STATUS_SUCCESS)
            return -1;
        } else {
          CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(handle_), opa, opb, k.m, k.n, k.k, &alpha, A,
                                    CUDA_R_16BF, p.lda, B, CUDA_R_16BF, p.ldb, &beta, C,
                                    k.c_f32 ? CUDA_R_32F : CUDA_R_16BF, p.ldc, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
        }
      }
      CUDA_CHECK(cudaEventRecord(e1, stream));
      CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      return ms / reps;
    };
    // Runs enough to fill about 150 ms (sustained), from a first estimate.
    auto timed = [&](const cublasLtMatmulAlgo_t* algo) -> double {
      const double first = time_algo(algo, 3);
      if (!sustained || first <= 0) return first;
      return time_algo(algo, std::max(3, static_cast<int>(150.0 / first)));
    };
    const double base = timed(nullptr);
    double best = base;
    int winner = -1;
    for (int i = 0; i < found; ++i) {
      if (cand[i].state != CUBLAS_STATUS_SUCCESS) continue;
      const double ms = timed(&cand[i].algo);
      if (ms > 0 && ms < best) {
        best = ms;
        winner = i;
      }
    }
    cudaGetLastError();
    default_ms += base;
    best_ms += best;
    // Keep a candidate only when it beats cuBLAS's own choice by more than noise.
    if (winner >= 0 && best < 0.99 * base) {
      t->algo = cand[winner].algo;
      tuned_[k] = t;
      ++improved;
    }
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  CUDA_CHECK(cudaFree(A));
  CUDA_CHECK(cudaFree(B));
  CUDA_CHECK(cudaFree(C));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  char line[256];
  std::snprintf(line, sizeof line,
                "GEMM tuning (%s): %zu products in %.1f s; %d run a faster cuBLASLt algorithm (sum of one each: "
                "%.3f -> %.3f ms)",
                sustained ? "sustained, ~150 ms a candidate" : "3 runs a candidate", products.size(), secs, improved,
                default_ms, std::min(best_ms, default_ms));
  return line;
}

}  // namespace intellect::cuda
