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

// Eight pairs per thread with 16-byte accesses (half % 8 == 0, rows aligned).
__global__ void rope_vec_kernel(bf16* x, int64_t T, int64_t n_heads, int64_t row_stride, int64_t half,
                                const float* cos, const float* sin, float sign, int64_t total) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= total) return;
  const int64_t groups = half / 8;
  const int64_t i = (idx % groups) * 8;
  const int64_t h = (idx / groups) % n_heads;
  const int64_t row = idx / (groups * n_heads);
  const int64_t t = row % T;
  bf16* v = x + row * row_stride + h * 2 * half;
  Bf16x8 a = load8(v + i), b = load8(v + i + half);
  const float4* c4 = reinterpret_cast<const float4*>(cos + t * half + i);
  const float4* s4 = reinterpret_cast<const float4*>(sin + t * half + i);
  const float4 ca = c4[0], cb = c4[1], sa = s4[0], sb = s4[1];
  const float c[8] = {ca.x, ca.y, ca.z, ca.w, cb.x, cb.y, cb.z, cb.w};
  const float sn[8] = {sa.x, sa.y, sa.z, sa.w, sb.x, sb.y, sb.z, sb.w};
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float x1 = __bfloat162float(a.v[k]), x2 = __bfloat162float(b.v[k]), s = sign * sn[k];
    a.v[k] = __float2bfloat16(x1 * c[k] - x2 * s);
    b.v[k] = __float2bfloat16(x2 * c[k] + x1 * s);
  }
  store8(v + i, a);
  store8(v + i + half, b);
}

}  // namespace

void rope_apply(bf16* x, int64_t B, int64_t T, int64_t n_heads, int64_t row_stride,
                int64_t head_dim, const float* cos, const float* sin, bool inverse,
                cudaStream_t stream) {
  const int64_t half = head_dim / 2, total = B * T * n_heads * half;
  if (total == 0) return;
  if (half % 8 == 0 && row_stride % 8 == 0 && aligned16(x) && aligned16(cos) && aligned16(sin)) {
    rope_vec_kernel<<<ceil_div(total / 8, 256), 256, 0, stream>>>(x, T, n_heads, row_stride, half, cos, sin,
                                                                  inverse ? -1.0f : 1.0f, total / 8);
    CUDA_CHECK_LAUNCH();
    return;
  }
  rope_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(x, T, n_heads, row_stride, half, cos, sin,
                                                        inverse ? -1.0f : 1.0f, total);
  CUDA_CHECK_LAUNCH();
}

}  // namespace intellect::cuda
