// Causal grouped-query attention over a fused QKV activation.
//
// qkv is [B*T, qkv_stride] with, per row, n_heads query vectors, then n_kv_heads
// key vectors, then n_kv_heads value vectors, each head_dim wide (after RoPE).
// Query head h reads key/value head h / (n_heads / n_kv_heads).
// The CPU twin keeps only the row log-sum-exp (lse) of the softmax and
// recomputes probabilities in backward, as flash attention does: T×T scores are
// never stored.
#pragma once
#include <cstdint>

namespace intellect::cpu {

struct AttentionShape {
  int64_t B, T, n_heads, n_kv_heads, head_dim;
  int64_t qkv_stride() const { return (n_heads + 2 * n_kv_heads) * head_dim; }
  int64_t out_stride() const { return n_heads * head_dim; }
};

// out [B*T, n_heads*head_dim]; lse [B, n_heads, T].
void attention_forward(float* out, float* lse, const float* qkv, const AttentionShape& s);

// dqkv [B*T, qkv_stride] is overwritten with the gradients for q, k and v.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, const AttentionShape& s);

}  // namespace intellect::cpu
