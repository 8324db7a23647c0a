// Elementwise helpers around FSDP's gradient reduce-scatter: a unit's fp32
// gradient is optionally rounded to bf16 before it goes over NVLink (half the
// bytes), and each GPU adds the reduced shard into its fp32 gradient shard,
// so micro-batches keep accumulating in fp32. The two conversions also serve
// the outer step's weight transfers, which convert on the GPU so that the
// host side is a plain DMA into pinned fp32 memory.
#pragma once
#include <cstddef>
#include <cstdint>

namespace intellect::cpu {
// dst[i] += src[i]
void add_into(float* dst, const float* src, int64_t n);
}  // namespace intellect::cpu

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// dst[i] += src[i], src fp32 or bf16.
void add_into(float* dst, const float* src, int64_t n, cudaStream_t stream);
void add_into(float* dst, const bf16* src, int64_t n, cudaStream_t stream);
// dst[i] = bf16(src[i]), round to nearest even.
void to_bf16(bf16* dst, const float* src, int64_t n, cudaStream_t stream);
// dst[i] = float(src[i]), exact.
void to_f32(float* dst, const bf16* src, int64_t n, cudaStream_t stream);
}  // namespace intellect::cuda
#endif
