// Embedding on the GPU. Forward is a row gather; backward sums each token's
// rows in position order (buckets built on the host), so it is deterministic
// and needs no atomics.
#include "kernels/cuda_common.cuh"
#include "kernels/embedding.h"

namespace intellect::cuda {

namespace {

// One block per token row; 16-byte copies when the row allows it.
__global__ void embedding_forward_kernel(bf16* out, const int32_t* tokens, const bf16* table,
                                         int64_t dim, bool vec) {
  const int64_t n = blockIdx.x;
  const bf16* src = table + static_cast<int64_t>(tokens[n]) * dim;
  bf16* dst = out + n * dim;
  if (vec) {
    for (int64_t i = threadIdx.x * 8; i < dim; i += blockDim.x * 8) store8(dst + i, load8(src + i));
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
  }
}

// Block (bucket, column chunk): each thread owns one column and walks the
// bucket's positions in order.
template <typename G>
__global__ void embedding_backward_kernel(G* dtable, const bf16* dout, const int32_t* positions,
                                          const int32_t* starts, const int32_t* tokens,
                                          int64_t dim) {
  const int64_t g = blockIdx.x;
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= dim) return;
  float acc = 0.0f;
  for (int32_t i = starts[g]; i < starts[g + 1]; ++i)
    acc += __bfloat162float(dout[static_cast<int64_t>(positions[i]) * dim + c]);
  G* d = dtable + static_cast<int64_t>(tokens[g]) * dim + c;
  if constexpr (sizeof(G) == 4) *d += acc;
  else *d = __float2bfloat16(__bfloat162float(*d) + acc);
}

// Eight columns per thread: 16-byte reads of dout, then one read-modify-write
// of the table row's eight values (two float4, or one 16-byte bf16 group).
template <typename G>
__global__ void embedding_backward_vec_kernel(G* dtable, const bf16* dout, const int32_t* positions,
                                              const int32_t* starts, const int32_t* tokens, int64_t dim) {
  const int64_t g = blockIdx.x;
  const int64_t c = (blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x) * 8;
  if (c >= dim) return;
  float acc[8] = {};
  for (int32_t i = starts[g]; i < starts[g + 1]; ++i) {
    const Bf16x8 v = load8(dout + static_cast<int64_t>(positions[i]) * dim + c);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] += __bfloat162float(v.v[k]);
  }
  G* dst = dtable + static_cast<int64_t>(tokens[g]) * dim + c;
  if constexpr (sizeof(G) == 4) {
    float4* row = reinterpret_cast<float4*>(dst);
    float4 a = row[0], b = row[1];
    a.x += acc[0], a.y += acc[1], a.z += acc[2], a.w += acc[3];
    b.x += acc[4], b.y += acc[5], b.z += acc[6], b.w += acc[7];
    row[0] = a;
    row[1] = b;
  } else {
    Bf16x8 row = load8(dst);
#pragma unroll
    for (int k = 0; k < 8; ++k) row.v[k] = __float2bfloat16(__bfloat162float(row.v[k]) + acc[k]);
    store8(dst, row);
  }
}

template <typename G>
void launch_backward(G* dtable, const bf16* dout, const int32_t* positions, const int32_t* starts,
                     const int32_t* bucket_tokens, int64_t n_buckets, int64_t dim, cudaStream_t stream) {
  if (dim % 8 == 0 && aligned16(dtable) && aligned16(dout)) {
    const int threads = 64;
    dim3 grid(static_cast<unsigned>(n_buckets), ceil_div(dim / 8, threads));
    embedding_backward_vec_kernel<<<grid, threads, 0, stream>>>(dtable, dout, positions, starts,
                                                                bucket_tokens, dim);
    CUDA_CHECK_LAUNCH();
    return;
  }
  const int threads = 256;
  dim3 grid(static_cast<unsigned>(n_buckets), ceil_div(dim, threads));
  embedding_backward_kernel<<<grid, threads, 0, stream>>>(dtable, dout, positions, starts, bucket_tokens, dim);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void embedding_forward(bf16* out, const int32_t* tokens, const bf16* table, int64_t n_tokens,
                       int64_t dim, cudaStream_t stream) {
  if (n_tokens == 0) return;
  const bool vec = dim % 8 == 0 && aligned16(out) && aligned16(table);
  embedding_forward_kernel<<<static_cast<unsigned>(n_tokens), vec ? 128 : 256, 0, stream>>>(
      out, tokens, table, dim, vec);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(const GradOut& dtable, const bf16* dout, const int32_t* positions,
                        const int32_t* starts, const int32_t* bucket_tokens, int64_t n_buckets,
                        int64_t dim, cudaStream_t stream) {
  // Rows of tokens absent from the batch are never written, so the table's
  // gradient must already hold something to add to.
  if (!dtable.accumulate) fail("embedding_backward: the gradient table must be zeroed or accumulated into");
  if (n_buckets == 0) return;
  if (dtable.bf16)
    launch_backward(dtable.as<bf16>(), dout, positions, starts, bucket_tokens, n_buckets, dim, stream);
  else
    launch_backward(dtable.as<float>(), dout, positions, starts, bucket_tokens, n_buckets, dim, stream);
}

}  // namespace intellect::cuda
