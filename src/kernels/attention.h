// Causal grouped-query attention over a fused QKV activation, optionally
// masked per packed document.
//
// qkv is [B*T, qkv_stride] with, per row, n_heads query vectors, then n_kv_heads
// key vectors, then n_kv_heads value vectors, each head_dim wide (after RoPE).
// Query head h reads key/value head h / (n_heads / n_kv_heads).
// The CPU twin keeps only the row log-sum-exp (lse) of the softmax and
// recomputes probabilities in backward, as flash attention does: T×T scores are
// never stored.
//
// Document masking (PRIME's packing, FlexAttention's document mask): with
// segments, the B*T tokens are cut into segments cu_seqlens[i] ..
// cu_seqlens[i+1]-1 (flat indices, as Batch::cu_seqlens), and a query at flat
// index i attends to keys j with seg_start(i) <= j <= i: its own document,
// causally. Every row start must be a segment start (a segment never crosses
// rows). Without segments (cu_seqlens == nullptr) each row is one segment:
// plain causal attention. RoPE positions are not affected (they stay absolute
// within the row, as PRIME keeps them).
#pragma once
#include <cstdint>

namespace intellect::cpu {

struct AttentionShape {
  int64_t B, T, n_heads, n_kv_heads, head_dim;
  int64_t qkv_stride() const { return (n_heads + 2 * n_kv_heads) * head_dim; }
  int64_t out_stride() const { return n_heads * head_dim; }
};

// Throws intellect::Error naming the first entry that breaks the rules above
// (cu_seqlens[0] = 0, strictly ascending, cu_seqlens[n] = B*T, every row start
// r*T present). n_segments is the number of segments (cu_seqlens has n + 1 entries).
void check_segments(const int32_t* cu_seqlens, int64_t n_segments, int64_t B, int64_t T);

// out [B*T, n_heads*head_dim]; lse [B, n_heads, T].
void attention_forward(float* out, float* lse, const float* qkv, const AttentionShape& s,
                       const int32_t* cu_seqlens = nullptr, int64_t n_segments = 0);

// dqkv [B*T, qkv_stride] is overwritten with the gradients for q, k and v.
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, const AttentionShape& s, const int32_t* cu_seqlens = nullptr,
                        int64_t n_segments = 0);

}  // namespace intellect::cpu

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// The fallback fused attention: our own flash-style kernels (online softmax,
// T×T scores never stored) on CUDA cores, any head_dim ≤ 256. cuDNN's fused
// SDPA (attention_cudnn.h) is the fast path; this one is always available.
// lse [B, H, T] fp32; dqkv overwritten; scratch holds B*H*T floats (dO·O).
// cu_seqlens (device, n_segments + 1 entries, checked by the caller with
// cpu::check_segments) masks per document; nullptr = plain causal.
void attention_forward(bf16* out, float* lse, const bf16* qkv, const cpu::AttentionShape& s,
                       cudaStream_t stream, const int32_t* cu_seqlens = nullptr, int64_t n_segments = 0);
void attention_backward(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                        const bf16* out, const float* lse, const cpu::AttentionShape& s,
                        cudaStream_t stream, const int32_t* cu_seqlens = nullptr, int64_t n_segments = 0);
}  // namespace intellect::cuda
#endif
