// RoPE on the GPU, in place on the q and k heads of the fused QKV rows.
// One thread per (row, head, pair i): it rotates (x[i], x[i+half]).
// DRAM floor: read and write each rotated element once: 4 bytes per element.
#include "kernels/cuda_common.cuh"
#include "kernels/rope.h"

namespace intellect::cuda {

namespace {

__global__ void rope_kernel(bf16* x, int64_t T, int64_t n_heads, int64_t row_stride, int64_t half,
                            const float* cos, const float* sin, float sign, int64_t total) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= total) return;
  const int64_t i = idx % half;
  const int64_t h = (idx / half) % n_heads;
  const int64_t row = idx / (half * n_heads);
  const int64_t t = row % T;
  bf16* v = x + row * row_stride + h * 2 * half;
  const float c = cos[t * half + i], s = sign * sin[t * half + i];
  const float x1 = __bfloat162float(v[i]), x2 = __bfloat162float(v[i + half]);
  v[i] = __float2bfloat16(x1 * c - x2 * s);
  v[i + half] = __float2bfloat16(x2 * c + x1 * s);
}

}  // namespace

void rope_apply(bf16* x, int64_t B, int64_t T, int64_t n_heads, int64_t row_stride,
                int64_t head_dim, const float* cos, const float* sin, bool inverse,
                cudaStream_t stream) {
  const int64_t half = head_dim / 2, total = B * T * n_heads * half;
  if (total == 0) return;
  rope_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(x, T, n_heads, row_stride, half, cos, sin,
                                                        inverse ? -1.0f : 1.0f, total);
  CUDA_CHECK_LAUNCH();
}

}  // namespace intellect::cuda
