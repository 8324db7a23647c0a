// SwiGLU on the GPU over the fused gate|up GEMM output.
// DRAM floor: forward reads 2F and writes F values per row (6 bytes per output
// element); backward reads 3F, writes 2F (10 bytes per output element).
#include "kernels/cuda_common.cuh"
#include "kernels/swiglu.h"

namespace intellect::cuda {

namespace {

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + __expf(-x)); }

template <bool kVec>
__global__ void swiglu_forward_kernel(bf16* out, const bf16* gu, int64_t N, int64_t F) {
  const int64_t step = kVec ? 8 : 1;
  const int64_t idx = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * step;
  if (idx >= N * F) return;
  const int64_t n = idx / F, i = idx % F;
  const bf16* g = gu + n * 2 * F + i;
  const bf16* u = g + F;
  if constexpr (kVec) {
    const Bf16x8 gv = load8(g), uv = load8(u);
    Bf16x8 o;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float x = __bfloat162float(gv.v[k]);
      o.v[k] = __float2bfloat16(x * sigmoidf(x) * __bfloat162float(uv.v[k]));
    }
    store8(out + idx, o);
  } else {
    const float x = __bfloat162float(*g);
    out[idx] = __float2bfloat16(x * sigmoidf(x) * __bfloat162float(*u));
  }
}

template <bool kVec>
__global__ void swiglu_backward_kernel(bf16* dgu, const bf16* dout, const bf16* gu, int64_t N,
                                       int64_t F) {
  const int64_t step = kVec ? 8 : 1;
  const int64_t idx = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * step;
  if (idx >= N * F) return;
  const int64_t n = idx / F, i = idx % F;
  const bf16* g = gu + n * 2 * F + i;
  const bf16* u = g + F;
  bf16* dg = dgu + n * 2 * F + i;
  bf16* du = dg + F;
  if constexpr (kVec) {
    const Bf16x8 gv = load8(g), uv = load8(u), dv = load8(dout + idx);
    Bf16x8 og, ou;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float x = __bfloat162float(gv.v[k]), s = sigmoidf(x), d = __bfloat162float(dv.v[k]);
      ou.v[k] = __float2bfloat16(d * x * s);
      og.v[k] = __float2bfloat16(d * __bfloat162float(uv.v[k]) * s * (1.0f + x * (1.0f - s)));
    }
    store8(dg, og);
    store8(du, ou);
  } else {
    const float x = __bfloat162float(*g), s = sigmoidf(x), d = __bfloat162float(dout[idx]);
    *du = __float2bfloat16(d * x * s);
    *dg = __float2bfloat16(d * __bfloat162float(*u) * s * (1.0f + x * (1.0f - s)));
  }
}

}  // namespace

void swiglu_forward(bf16* out, const bf16* gate_up, int64_t N, int64_t F, cudaStream_t stream) {
  if (N * F == 0) return;
  if (F % 8 == 0 && aligned16(out) && aligned16(gate_up))
    swiglu_forward_kernel<true><<<ceil_div(N * F / 8, 256), 256, 0, stream>>>(out, gate_up, N, F);
  else
    swiglu_forward_kernel<false><<<ceil_div(N * F, 256), 256, 0, stream>>>(out, gate_up, N, F);
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward(bf16* dgate_up, const bf16* dout, const bf16* gate_up, int64_t N, int64_t F,
                     cudaStream_t stream) {
  if (N * F == 0) return;
  if (F % 8 == 0 && aligned16(dgate_up) && aligned16(dout) && aligned16(gate_up))
    swiglu_backward_kernel<true><<<ceil_div(N * F / 8, 256), 256, 0, stream>>>(dgate_up, dout,
                                                                              gate_up, N, F);
  else
    swiglu_backward_kernel<false><<<ceil_div(N * F, 256), 256, 0, stream>>>(dgate_up, dout,
                                                                           gate_up, N, F);
  CUDA_CHECK_LAUNCH();
}

}  // namespace intellect::cuda
