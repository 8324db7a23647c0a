// Token embedding lookup. Backward is a scatter-add into the table; the CPU
// twin splits the work by columns so each gradient element is summed over the
// tokens in order, whatever the thread count.
#pragma once
#include <cstdint>

namespace intellect::cpu {

// out[n, :] = table[tokens[n], :]; tokens must be in [0, vocab).
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t n_tokens,
                       int64_t vocab, int64_t dim);
// dtable[tokens[n], :] += dout[n, :]
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t dim);

}  // namespace intellect::cpu
