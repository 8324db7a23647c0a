// Which cuBLASLt FP8 configurations run on this GPU (a diagnostic for the sixteenth session).
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdint>
int main() {
  int ver = 0; cublasLtHandle_t lt; cublasLtCreate(&lt);
  printf("cublasLt version %zu, cudart ", cublasLtGetVersion()); cudaRuntimeGetVersion(&ver); printf("%d\n", ver);
  void *a, *b, *d, *ws; float* sc;
  cudaMalloc(&a, 1 << 24); cudaMalloc(&b, 1 << 24); cudaMalloc(&d, 1 << 26); cudaMalloc(&ws, 32 << 20); cudaMalloc(&sc, 4096);
  cudaMemset(a, 0, 1 << 24); cudaMemset(b, 0, 1 << 24);
  float one = 1.0f; for (int i = 0; i < 1024; ++i) cudaMemcpy(sc + i, &one, 4, cudaMemcpyHostToDevice);
  const int m = 256, n = 256, k = 256;
  for (int variant = 0; variant < 20; ++variant) {
    // 16..19: scales 256 bytes apart (where the model keeps them since the seventeenth session)
    const bool misaligned = variant < 16 && (variant & 1), fast = variant & 2, dfp32 = variant & 4,
               no_scales = variant < 16 && (variant & 8), wide = variant >= 16;
    cublasLtMatmulDesc_t desc; cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    int8_t f = fast; cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &f, sizeof f);
    const float* as = sc + (misaligned ? 1 : 0); const float* bs = sc + (misaligned ? 3 : wide ? 64 : 4);
    if (!no_scales) {
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &as, sizeof as);
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &bs, sizeof bs);
    }
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, k, m, k);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, k, n, k);
    cublasLtMatrixLayoutCreate(&lc, dfp32 ? CUDA_R_32F : CUDA_R_16BF, m, n, m);
    cublasLtMatmulPreference_t pref; cublasLtMatmulPreferenceCreate(&pref);
    size_t wsb = 32 << 20; cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    cublasLtMatmulHeuristicResult_t r[8]; int found = 0;
    int hs = cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 8, r, &found);
    printf("scales %s fast %d D %s: heuristic %d found %d; runs:", no_scales ? "none" : misaligned ? "4-byte offsets" : wide ? "256 bytes apart" : "16-byte aligned", fast, dfp32 ? "fp32" : "bf16", hs, found);
    float alpha = 1, beta = 0;
    for (int i = 0; i < found; ++i) printf(" %d", (int)cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, d, lc, d, lc, &r[i].algo, ws, wsb, 0));
    // C distinct from D, with beta 0
    if (found) printf(" | C!=D: %d", (int)cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, (char*)d + (1 << 25), lc, d, lc, &r[0].algo, ws, wsb, 0));
    printf(" | sync %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
  }
  return 0;
}
