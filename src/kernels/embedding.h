// Token embedding lookup. Backward is a scatter-add into the table; the CPU
// twin splits the work by columns so each gradient element is summed over the
// tokens in order, whatever the thread count.
#pragma once
#include <cstdint>
#include <vector>

namespace intellect::cpu {

// out[n, :] = table[tokens[n], :]; tokens must be in [0, vocab).
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t n_tokens,
                       int64_t vocab, int64_t dim);
// dtable[tokens[n], :] += dout[n, :]
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t dim);

// Rows of `tokens` grouped by token id (each group in position order), built
// on the host next to the batch: the backward pass sums each group in order,
// so the scatter-add is deterministic.
struct TokenBuckets {
  std::vector<int32_t> positions;  // all positions, grouped by token id
  std::vector<int32_t> starts;     // group g is positions[starts[g] .. starts[g+1])
  std::vector<int32_t> tokens;     // token id of group g
};
TokenBuckets bucket_tokens(const int32_t* tokens, int64_t n_tokens);

}  // namespace intellect::cpu

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// out[n, :] = table[tokens[n], :] (tokens already range-checked on the host).
void embedding_forward(bf16* out, const int32_t* tokens, const bf16* table, int64_t n_tokens,
                       int64_t dim, cudaStream_t stream);
// dtable[token, :] += Σ dout[pos, :] over each bucket's positions, in order
// (summed in fp32, one rounding per row when the table is bf16). Always adds:
// rows of tokens absent from the batch are left as they are.
void embedding_backward(const GradOut& dtable, const bf16* dout, const int32_t* positions,
                        const int32_t* starts, const int32_t* bucket_tokens, int64_t n_buckets,
                        int64_t dim, cudaStream_t stream);
}  // namespace intellect::cuda
#endif
