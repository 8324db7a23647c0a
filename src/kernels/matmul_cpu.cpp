#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/matmul.h"

namespace intellect::cpu {

namespace {

constexpr int64_t kRows = 4;     // rows of C updated together: each B row is loaded once for 4
constexpr int64_t kCols = 512;   // columns per pass, so 4 partial C rows stay in L1

// C rows [m0, m0+rows) for columns [n0, n1). The k loop is outermost per
// element, always ascending: the summation order is fixed. Compiled twice, for
// AVX2+FMA machines and for any x86-64, and chosen at load time.
__attribute__((target_clones("arch=x86-64-v3", "default")))
void gemm_tile(float* C, const float* A, const float* B, int64_t rows, int64_t n0, int64_t n1,
               int64_t N, int64_t K, bool accumulate) {
  const int64_t w = n1 - n0;
  float acc[kRows][kCols];
  for (int64_t r = 0; r < rows; ++r) {
    if (accumulate)
      std::memcpy(acc[r], C + r * N + n0, sizeof(float) * w);
    else
      std::memset(acc[r], 0, sizeof(float) * w);
  }
  if (rows == kRows) {
    for (int64_t k = 0; k < K; ++k) {
      const float* b = B + k * N + n0;
      const float a0 = A[0 * K + k], a1 = A[1 * K + k], a2 = A[2 * K + k], a3 = A[3 * K + k];
      for (int64_t j = 0; j < w; ++j) {
        const float bj = b[j];
        acc[0][j] += a0 * bj;
        acc[1][j] += a1 * bj;
        acc[2][j] += a2 * bj;
        acc[3][j] += a3 * bj;
      }
    }
  } else {
    for (int64_t k = 0; k < K; ++k) {
      const float* b = B + k * N + n0;
      for (int64_t r = 0; r < rows; ++r) {
        const float a = A[r * K + k];
        for (int64_t j = 0; j < w; ++j) acc[r][j] += a * b[j];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) std::memcpy(C + r * N + n0, acc[r], sizeof(float) * w);
}

void transpose(float* dst, const float* src, int64_t rows, int64_t cols) {
  constexpr int64_t kT = 32;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i0 = 0; i0 < rows; i0 += kT)
    for (int64_t j0 = 0; j0 < cols; j0 += kT)
      for (int64_t i = i0; i < std::min(rows, i0 + kT); ++i)
        for (int64_t j = j0; j < std::min(cols, j0 + kT); ++j) dst[j * rows + i] = src[i * cols + j];
}

// Scratch for transposed operands; grows to the largest shape once and is reused.
std::vector<float>& scratch(int which, size_t n) {
  static thread_local std::vector<float> buf[2];
  if (buf[which].size() < n) buf[which].resize(n);
  return buf[which];
}

}  // namespace

void gemm_nn(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
             bool accumulate) {
  const int64_t row_blocks = (M + kRows - 1) / kRows;
  const int64_t col_blocks = (N + kCols - 1) / kCols;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t rb = 0; rb < row_blocks; ++rb)
    for (int64_t cb = 0; cb < col_blocks; ++cb) {
      const int64_t m0 = rb * kRows, rows = std::min(kRows, M - m0);
      const int64_t n0 = cb * kCols, n1 = std::min(N, n0 + kCols);
      gemm_tile(C + m0 * N, A + m0 * K, B, rows, n0, n1, N, K, accumulate);
    }
}

void matmul_forward(float* out, const float* in, const float* w, int64_t M, int64_t N, int64_t K) {
  std::vector<float>& wt = scratch(0, static_cast<size_t>(N * K));
  transpose(wt.data(), w, N, K);  // [K, N]
  gemm_nn(out, in, wt.data(), M, N, K, false);
}

void matmul_backward(float* din, float* dw, const float* dout, const float* in, const float* w,
                     int64_t M, int64_t N, int64_t K) {
  if (din) gemm_nn(din, dout, w, M, K, N, false);
  if (dw) {
    std::vector<float>& dt = scratch(1, static_cast<size_t>(M * N));
    transpose(dt.data(), dout, M, N);  // [N, M]
    gemm_nn(dw, dt.data(), in, N, K, M, true);
  }
}

}  // namespace intellect::cpu
