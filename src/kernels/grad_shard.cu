// Memory-bound elementwise kernels; a grid-stride loop over the range. They
// run on FSDP's communication stream between NCCL calls, so they stay small:
// a few hundred blocks leave the SMs to the compute stream's GEMMs.
#include "kernels/cuda_common.cuh"
#include "kernels/grad_shard.h"

namespace intellect::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kBlocks = 264;  // two waves' worth of one block per SM on H100/H200

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

template <typename S>
__global__ void add_into_kernel(float* __restrict__ dst, const S* __restrict__ src, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride)
    dst[i] += to_f32(src[i]);
}

__global__ void to_bf16_kernel(bf16* __restrict__ dst, const float* __restrict__ src, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride)
    dst[i] = __float2bfloat16(src[i]);
}

__global__ void to_f32_kernel(float* __restrict__ dst, const bf16* __restrict__ src, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride)
    dst[i] = __bfloat162float(src[i]);
}

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < kBlocks ? (b < 1 ? 1 : b) : kBlocks);
}

}  // namespace

void add_into(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_into_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK(cudaGetLastError());
}

void add_into(float* dst, const bf16* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_into_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK(cudaGetLastError());
}

void to_bf16(bf16* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK(cudaGetLastError());
}

void to_f32(float* dst, const bf16* src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  to_f32_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace intellect::cuda
