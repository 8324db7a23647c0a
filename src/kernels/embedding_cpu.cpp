#include <cstring>

#include "kernels/embedding.h"
#include "util/error.h"

namespace intellect::cpu {

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t n_tokens,
                       int64_t vocab, int64_t dim) {
  for (int64_t n = 0; n < n_tokens; ++n)
    if (tokens[n] < 0 || tokens[n] >= vocab)
      fail("token id ", tokens[n], " at position ", n, " is outside the vocabulary [0, ", vocab,
           "): the data was made with another tokenizer, or model.vocab_size is too small");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < n_tokens; ++n)
    std::memcpy(out + n * dim, table + static_cast<int64_t>(tokens[n]) * dim, sizeof(float) * dim);
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t dim) {
  constexpr int64_t kChunk = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < dim; c0 += kChunk) {
    const int64_t c1 = c0 + kChunk < dim ? c0 + kChunk : dim;
    for (int64_t n = 0; n < n_tokens; ++n) {
      float* row = dtable + static_cast<int64_t>(tokens[n]) * dim;
      const float* g = dout + n * dim;
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

}  // namespace intellect::cpu
