#include <algorithm>
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

namespace intellect::cpu {

TokenBuckets bucket_tokens(const int32_t* tokens, int64_t n_tokens) {
  TokenBuckets b;
  b.positions.resize(n_tokens);
  for (int64_t i = 0; i < n_tokens; ++i) b.positions[i] = static_cast<int32_t>(i);
  // Stable: positions of one token stay in ascending order.
  std::stable_sort(b.positions.begin(), b.positions.end(),
                   [&](int32_t x, int32_t y) { return tokens[x] < tokens[y]; });
  for (int64_t i = 0; i < n_tokens; ++i) {
    if (i == 0 || tokens[b.positions[i]] != tokens[b.positions[i - 1]]) {
      b.starts.push_back(static_cast<int32_t>(i));
      b.tokens.push_back(tokens[b.positions[i]]);
    }
  }
  b.starts.push_back(static_cast<int32_t>(n_tokens));
  return b;
}

}  // namespace intellect::cpu
