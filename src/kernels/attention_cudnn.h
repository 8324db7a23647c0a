// Causal grouped-query flash attention through cuDNN's backend (graph) API.
//
// We build the fused-attention operation graphs ourselves with
// cudnnBackendCreateDescriptor / SetAttribute / Finalize (no cudnn_frontend):
// forward  = matmul(Q,Kᵀ) → ×scale → causal mask → softmax (with stats) → matmul(P,V),
// backward = the matching composite graph (dO·O row sums, recomputed P, dV, dK, dQ),
// and let cuDNN's heuristics pick the fused flash engine for each. Tensors are
// described with strides straight into the fused QKV activation, so nothing is
// transposed or copied.
//
// Packed documents (attention.h's document mask) use cuDNN's variable-length
// ("ragged") SDPA: each document is one sequence of the graph's batch, found
// in the packed QKV/O/dO/dQKV buffers through ragged offsets, with its length
// in per-sequence seq_len tensors (padding mask), causal within it. See
// attention_cudnn.cu for how a batch's documents are dealt out to a few
// prebuilt graphs.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/attention.h"  // intellect::cpu::AttentionShape

namespace intellect::cuda {

// Causal GQA attention on a fused QKV activation (see src/kernels/attention.h for the layout):
// qkv [B*T, (H + 2*KV)*hd] bf16 row-major: per row H query heads, then KV key heads, then KV
// value heads.
// out [B*T, H*hd] bf16; lse [B, H, T] fp32 = natural-log log-sum-exp of the scaled scores
// (scale 1/sqrt(hd)), i.e. cuDNN's softmax stats.
// dqkv has the layout of qkv and receives dq, dk, dv (dk/dv summed over the query heads of
// each group).
class CudnnAttention {
 public:
  // Builds and finalizes the forward and backward execution plans. Throws intellect::Error
  // naming the step that failed and cuDNN's status and message if cuDNN cannot do it.
  // With documents, also builds the ragged plans for packed documents; their failure does
  // not throw (the plain plans still work): documents_ready() is then false and
  // documents_error() says why.
  CudnnAttention(const cpu::AttentionShape& shape, cudaStream_t stream, bool documents = false);
  ~CudnnAttention();  // destroys descriptors and the handle
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Bytes of device workspace forward() and backward() need (the max of the two, and of the
  // document plans when built); the backward part includes its fp32 dQ accumulator and
  // dO·O row sums.
  size_t workspace_bytes() const;

  // All pointers are device pointers; workspace holds workspace_bytes() bytes (256-byte
  // aligned, as cudaMalloc gives). Asynchronous on the stream given to the constructor:
  // no allocations of device memory and no host synchronisation.
  void forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, void* workspace);
  void backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                const __nv_bfloat16* out, const float* lse, void* workspace);

  // --- packed documents ----------------------------------------------------------------
  bool documents_ready() const;
  const std::string& documents_error() const;
  // The most bytes schedule_documents() writes, for any segments of up to B rows.
  size_t document_bytes() const;
  // Host side, once per micro-batch: deals the segments (cu_seqlens as attention.h, already
  // checked with cpu::check_segments, over b ≤ B rows) out to cuDNN calls and writes each
  // call's seq_len and ragged-offset arrays to host_bytes (document_bytes() bytes, 16-byte
  // aligned). Returns how many bytes were written: the caller copies them, in stream order,
  // to the device buffer it then passes to the document forward and backward, which run
  // those calls. No allocation once the first batches have grown the call list.
  size_t schedule_documents(const int32_t* cu_seqlens, int64_t n_segments, void* host_bytes);
  // As forward/backward, masked per document, for the segments last scheduled; device_bytes
  // holds the scheduled arrays. Here lse is token-major, [b*T, H] (cuDNN's ragged stats),
  // not [B, H, T]: only backward_documents reads it.
  void forward_documents(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv,
                         const void* device_bytes, void* workspace);
  void backward_documents(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                          const __nv_bfloat16* out, const float* lse, const void* device_bytes,
                          void* workspace);

  // Which engines the heuristics picked, their workspace needs and how cuDNN classified
  // the graphs (SDPA_FWD / SDPA_BWD), for logs and the first runs on a new machine.
  std::string describe() const;

  // A GPU and cuDNN >= 9 at run time.
  static bool available();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace intellect::cuda
