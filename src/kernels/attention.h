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

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// The fallback fused attention: our own flash-style kernels (online softmax,
// T×T scores never stored) on CUDA cores, any head_dim ≤ 256. cuDNN's fused
// SDPA (attention_cudnn.h) is the fast path; this one is always available.
// lse [B, H, T] fp32; dqkv overwritten; scratch holds B*H*T floats (dO·O).
void attention_forward(bf16* out, float* lse, const bf16* qkv, const cpu::AttentionShape& s,
                       cudaStream_t stream);
void attention_backward(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                        const bf16* out, const float* lse, const cpu::AttentionShape& s,
                        cudaStream_t stream);
}  // namespace intellect::cuda
#endif
