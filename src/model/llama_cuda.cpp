#ifdef INTELLECT_HAVE_CUDA
#include "model/llama_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/attention_cudnn.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda_device.h"
#include "kernels/embedding.h"
#include "kernels/grad_shard.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "util/error.h"
#if defined(INTELLECT_HAVE_NCCL)
#include "dist/nccl_group.h"
#endif

namespace intellect {

using cuda::bf16;

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(e));
}

// Classifier rows per chunk: bf16 logits of one chunk stay under 512 MiB, so
// a 128256-entry vocabulary at 8192 tokens runs in four chunks.
int64_t classifier_chunk(int64_t N, int64_t V) {
  const int64_t rows = std::max<int64_t>(1, (int64_t(512) << 20) / (2 * V));
  return std::min(N, rows);
}

}  // namespace

template <class T>
T* LlamaCuda::alloc(size_t count) {
  if (count == 0) return nullptr;
  void* p = nullptr;
  const size_t bytes = count * sizeof(T);
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail("out of GPU memory: allocating ", bytes / double(1 << 20), " MiB after ",
         allocated_ / double(1 << 30), " GiB (", cudaGetErrorString(e),
         "). Lower train.micro_batch_size or train.seq_len, or set train.recompute to \"all\"");
  }
  allocations_.push_back(p);
  allocated_ += bytes;
  return static_cast<T*>(p);
}

LlamaCuda::LlamaCuda(const ModelConfig& cfg, const CudaOptions& opts, int64_t max_batch,
                     int64_t seq_len)
    : cfg_(cfg), opts_(opts), layout_(cfg), max_batch_(max_batch), T_(seq_len) {
  if (cuda::device_count() == 0)
    fail("train.device is \"cuda\" but no CUDA GPU is visible (", cuda::describe_device(0), ")");
  if (seq_len > cfg.max_seq_len) fail("seq_len ", seq_len, " exceeds model.max_seq_len ", cfg.max_seq_len);
  if (!opts_.recompute.empty() && static_cast<int64_t>(opts_.recompute.size()) != cfg.n_layers)
    fail("recompute: expected one flag per block (", cfg.n_layers, "), got ", opts_.recompute.size());
  if (opts_.recompute.empty()) opts_.recompute.assign(cfg.n_layers, false);
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
  check(cudaEventCreateWithFlags(&staging_free_, cudaEventDisableTiming), "event");

  if (opts_.world > 1 || opts_.rank != 0) {
    if (opts_.rank < 0 || opts_.rank >= opts_.world)
      fail("FSDP rank ", opts_.rank, " is outside the ", opts_.world, " GPUs of the node");
#if !defined(INTELLECT_HAVE_NCCL)
    fail("sharding over ", opts_.world, " GPUs needs NCCL, and this build has none (install NCCL and rebuild)");
#endif
    if (cfg.tie_embeddings)
      fail("FSDP over several GPUs needs untied embeddings (model.tie_embeddings=false): the embedding and "
           "the head are separate flat units");
    if (!opts_.comm) fail("FSDP rank ", opts_.rank, " of ", opts_.world, " has no NCCL communicator");
    plan_ = std::make_unique<ShardPlan>(layout_, opts_.world);
    pieces_ = plan_->pieces(opts_.rank);
    local_n_ = plan_->local_elements();
  } else {
    pieces_ = {ShardPiece{0, 0, layout_.total()}};
    local_n_ = layout_.total();
  }
  const int64_t P = static_cast<int64_t>(local_n_);
  const int64_t N = max_batch * seq_len, D = cfg.dim, F = cfg.ffn_dim, V = cfg.vocab_size;
  params_ = alloc<bf16>(P);
  if (opts_.master_weights) master_ = alloc<float>(P);
  grads_ = alloc<float>(P);
  if (opts_.optim_state_bf16) {
    m_ = alloc<bf16>(P);
    v_ = alloc<bf16>(P);
  } else {
    m_ = alloc<float>(P);
    v_ = alloc<float>(P);
  }
  check(cudaMemsetAsync(m_, 0, P * (opts_.optim_state_bf16 ? 2 : 4), stream_), "memset m");
  check(cudaMemsetAsync(v_, 0, P * (opts_.optim_state_bf16 ? 2 : 4), stream_), "memset v");

  check(cudaMemsetAsync(grads_, 0, P * sizeof(float), stream_), "memset grads");
  // Weight-decay ranges: matrices decay; norm gains and the embedding only if asked.
  std::vector<int64_t> bounds;
  std::vector<uint8_t> flags;
  local_decay_ranges(layout_, pieces_, local_n_, opts_.decay_norms_and_embeddings, bounds, flags);
  n_decay_ranges_ = static_cast<int>(flags.size());
  decay_bounds_ = alloc<int64_t>(bounds.size());
  decay_flags_ = alloc<uint8_t>(flags.size());
  // On stream_, not with cudaMemcpy: from pageable memory that returns before the DMA lands,
  // and the legacy stream it uses does not order stream_ (non-blocking). The host vectors
  // may go at once: a pageable copy has staged them when the call returns.
  check(cudaMemcpyAsync(decay_bounds_, bounds.data(), bounds.size() * 8, cudaMemcpyHostToDevice, stream_), "bounds");
  check(cudaMemcpyAsync(decay_flags_, flags.data(), flags.size(), cudaMemcpyHostToDevice, stream_), "flags");
  adam_scratch_ = alloc<float>(cuda::adamw_scratch_floats());
  norm_dev_ = alloc<float>(1);
  if (plan_) {
    // Gather and gradient buffers: two block-sized, one for the embedding or head.
    size_t block_max = 0, big_max = 0, shard_max = 0;
    for (size_t u = 0; u < plan_->units().size(); ++u) {
      const size_t padded = plan_->shard_len(u) * opts_.world;
      if (u == 0 || u + 1 == plan_->units().size()) big_max = std::max(big_max, padded);
      else block_max = std::max(block_max, padded);
      shard_max = std::max(shard_max, plan_->shard_len(u));
    }
    for (int s = 0; s < 3; ++s) {
      const size_t n = s == kBigSlot ? big_max : block_max;
      slots_[s].buf = alloc<bf16>(n);
      grad_slots_[s].buf = alloc<float>(n);
      for (Slot* x : {&slots_[s], &grad_slots_[s]}) {
        check(cudaEventCreateWithFlags(&x->ready, cudaEventDisableTiming), "event");
        check(cudaEventCreateWithFlags(&x->free, cudaEventDisableTiming), "event");
      }
    }
    rs_out_ = alloc<float>(shard_max);
    if (opts_.reduce_bf16) rs_in_bf16_ = alloc<bf16>(std::max(big_max, block_max));
    sum_squares_ = alloc<float>(1);
    check(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking), "comm stream");
    check(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming), "event");
    check(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming), "event");
  }
  loss_dev_ = alloc<double>(3);
  check(cudaMemsetAsync(loss_dev_, 0, 3 * sizeof(double), stream_), "memset loss");

  // Activations.
  auto block_buffers = [&](Block& b) {
    b.norm1 = alloc<bf16>(N * D);
    b.qkv = alloc<bf16>(N * cfg.qkv_dim());
    b.att = alloc<bf16>(N * cfg.q_dim());
    b.resid_mid = alloc<bf16>(N * D);
    b.norm2 = alloc<bf16>(N * D);
    b.gate_up = alloc<bf16>(N * 2 * F);
    b.act = alloc<bf16>(N * F);
    b.rstd1 = alloc<float>(N);
    b.rstd2 = alloc<float>(N);
    b.lse = alloc<float>(max_batch * cfg.n_heads * seq_len);
  };
  for (int64_t l = 0; l <= cfg.n_layers; ++l) resid_.push_back(alloc<bf16>(N * D));
  blocks_.resize(cfg.n_layers);
  bool any_recompute = false;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (opts_.recompute[l]) any_recompute = true;
    else block_buffers(blocks_[l]);
  }
  if (any_recompute) {
    block_buffers(shared_block_);
    for (int64_t l = 0; l < cfg.n_layers; ++l)
      if (opts_.recompute[l]) blocks_[l] = shared_block_;
  }
  norm_f_ = alloc<bf16>(N * D);
  rstd_f_ = alloc<float>(N);
  proj_ = alloc<bf16>(N * D);
  chunk_rows_ = classifier_chunk(N, V);
  logits_ = alloc<bf16>(chunk_rows_ * V);
  row_ce_ = alloc<float>(N);
  row_z_ = alloc<float>(N);

  const RopeTable rope = rope_table(cfg, seq_len);
  rope_cos_ = alloc<float>(rope.cos.size());
  rope_sin_ = alloc<float>(rope.sin.size());
  check(cudaMemcpyAsync(rope_cos_, rope.cos.data(), rope.cos.size() * 4, cudaMemcpyHostToDevice, stream_), "rope");
  check(cudaMemcpyAsync(rope_sin_, rope.sin.data(), rope.sin.size() * 4, cudaMemcpyHostToDevice, stream_), "rope");

  dresid_ = alloc<bf16>(N * D);
  dnorm_ = alloc<bf16>(N * D);
  dqkv_ = alloc<bf16>(N * cfg.qkv_dim());
  datt_ = alloc<bf16>(N * cfg.q_dim());
  dgate_up_ = alloc<bf16>(N * 2 * F);
  dact_ = alloc<bf16>(N * F);
  norm_scratch_ = alloc<float>(cuda::rmsnorm_backward_scratch_floats(N, D));
  attn_scratch_ = alloc<float>(max_batch * cfg.n_heads * seq_len);

  tokens_ = alloc<int32_t>(N);
  targets_ = alloc<int32_t>(N);
  bucket_pos_ = alloc<int32_t>(N);
  bucket_start_ = alloc<int32_t>(N + 1);
  bucket_tok_ = alloc<int32_t>(N);
  check(cudaMallocHost(&staging_, sizeof(int32_t) * (5 * N + 1)), "pinned staging");
  check(cudaMallocHost(&loss_host_, 3 * sizeof(double)), "pinned loss");
  check(cudaMallocHost(&norm_host_, sizeof(float)), "pinned norm");

  // Attention: cuDNN's fused SDPA when asked or available, else the fallback.
  if (opts_.attention != "fallback") {
    const cpu::AttentionShape shape{max_batch, seq_len, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim};
    try {
      if (!cuda::CudnnAttention::available()) fail("cuDNN is not available at run time");
      cudnn_attn_ = std::make_unique<cuda::CudnnAttention>(shape, stream_, opts_.doc_masking);
      cudnn_batch_ = max_batch;
      cudnn_documents_ = cudnn_attn_->documents_ready();
      if (opts_.doc_masking && !cudnn_documents_) {
        if (opts_.attention == "cudnn")
          fail("cuDNN cannot run packed-document attention (", cudnn_attn_->documents_error(),
               "); set train.attention to \"auto\" to use the fallback kernel for it, or train.doc_masking to false");
        std::fprintf(stderr, "intellect: cuDNN packed-document attention unavailable (%s); documents use the "
                     "fallback kernel\n", cudnn_attn_->documents_error().c_str());
      }
    } catch (const Error& e) {
      if (opts_.attention == "cudnn") throw;
      std::fprintf(stderr, "intellect: cuDNN attention unavailable (%s); using the fallback kernel\n",
                   e.what());
    }
  }
  workspace_bytes_ = cuda::Blas::kWorkspaceBytes;
  if (cudnn_attn_) workspace_bytes_ = std::max(workspace_bytes_, cudnn_attn_->workspace_bytes());
  workspace_ = alloc<uint8_t>(workspace_bytes_);
  blas_ = std::make_unique<cuda::Blas>(stream_, workspace_, cuda::Blas::kWorkspaceBytes);
  if (opts_.doc_masking) setup_documents();
  check(cudaStreamSynchronize(stream_), "init");
}

LlamaCuda::~LlamaCuda() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (comm_stream_) cudaStreamSynchronize(comm_stream_);
  for (Slot* x : {&slots_[0], &slots_[1], &slots_[2], &grad_slots_[0], &grad_slots_[1], &grad_slots_[2]}) {
    if (x->ready) cudaEventDestroy(x->ready);
    if (x->free) cudaEventDestroy(x->free);
  }
  if (comm_done_) cudaEventDestroy(comm_done_);
  if (compute_done_) cudaEventDestroy(compute_done_);
  if (comm_stream_) cudaStreamDestroy(comm_stream_);
  cudnn_attn_.reset();
  blas_.reset();
  for (void* p : allocations_) cudaFree(p);
  if (staging_) cudaFreeHost(staging_);
  if (loss_host_) cudaFreeHost(loss_host_);
  if (norm_host_) cudaFreeHost(norm_host_);
  if (doc_host_) cudaFreeHost(doc_host_);
  if (staging_free_) cudaEventDestroy(staging_free_);
  if (stream_) cudaStreamDestroy(stream_);
}

std::string LlamaCuda::attention_impl() const {
  std::string s = cudnn_attn_ ? "cuDNN fused SDPA" : "fallback flash-style kernel";
  if (opts_.doc_masking)
    s += cudnn_documents_ ? ", masked per document (cuDNN ragged SDPA)" : ", masked per document (fallback kernel)";
  return s;
}

namespace {

// Host flat buffer ↔ a rank's local buffer, through its pieces. Padding in
// the local buffer is written as zero.
template <class T, class F>
std::vector<T> gather_pieces(const std::vector<ShardPiece>& pieces, size_t local_n, const float* host, F convert) {
  std::vector<T> local(local_n, convert(0.0f));
  for (const ShardPiece& pc : pieces)
    for (size_t i = 0; i < pc.len; ++i) local[pc.local_begin + i] = convert(host[pc.flat_begin + i]);
  return local;
}
template <class T, class F>
void scatter_pieces(const std::vector<ShardPiece>& pieces, const std::vector<T>& local, float* host, F convert) {
  for (const ShardPiece& pc : pieces)
    for (size_t i = 0; i < pc.len; ++i) host[pc.flat_begin + i] = convert(local[pc.local_begin + i]);
}
float identity(float x) { return x; }
bf16 to_bf16(float x) { return __float2bfloat16(x); }
float from_bf16(bf16 x) { return __bfloat162float(x); }

}  // namespace

void LlamaCuda::upload_params(const float* host) {
  wait_for_comm();
  const std::vector<bf16> b = gather_pieces<bf16>(pieces_, local_n_, host, to_bf16);
  check(cudaMemcpyAsync(params_, b.data(), local_n_ * sizeof(bf16), cudaMemcpyHostToDevice, stream_), "params");
  if (master_) {
    const std::vector<float> f = gather_pieces<float>(pieces_, local_n_, host, identity);
    check(cudaMemcpyAsync(master_, f.data(), local_n_ * sizeof(float), cudaMemcpyHostToDevice, stream_),
          "master");
    check(cudaStreamSynchronize(stream_), "upload");  // before f goes away
  } else {
    check(cudaStreamSynchronize(stream_), "upload");  // before b goes away
  }
  invalidate_gathered();
}

void LlamaCuda::download_params(float* host) {
  wait_for_comm();
  if (master_) {
    std::vector<float> f(local_n_);
    check(cudaMemcpyAsync(f.data(), master_, local_n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_), "master");
    check(cudaStreamSynchronize(stream_), "download");
    scatter_pieces(pieces_, f, host, identity);
    return;
  }
  std::vector<bf16> b(local_n_);
  check(cudaMemcpyAsync(b.data(), params_, local_n_ * sizeof(bf16), cudaMemcpyDeviceToHost, stream_), "params");
  check(cudaStreamSynchronize(stream_), "download");
  scatter_pieces(pieces_, b, host, from_bf16);
}

void LlamaCuda::download_grads(float* host) {
  wait_for_comm();
  std::vector<float> f(local_n_);
  check(cudaMemcpyAsync(f.data(), grads_, local_n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_), "grads");
  check(cudaStreamSynchronize(stream_), "download grads");
  scatter_pieces(pieces_, f, host, identity);
}

void LlamaCuda::download_optimizer_state(float* m, float* v) {
  wait_for_comm();
  for (auto [dev, host] : {std::pair<void*, float*>{m_, m}, {v_, v}}) {
    if (opts_.optim_state_bf16) {
      std::vector<bf16> b(local_n_);
      check(cudaMemcpyAsync(b.data(), dev, local_n_ * sizeof(bf16), cudaMemcpyDeviceToHost, stream_), "state");
      check(cudaStreamSynchronize(stream_), "state");
      scatter_pieces(pieces_, b, host, from_bf16);
    } else {
      std::vector<float> f(local_n_);
      check(cudaMemcpyAsync(f.data(), dev, local_n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_), "state");
      check(cudaStreamSynchronize(stream_), "state");
      scatter_pieces(pieces_, f, host, identity);
    }
  }
}

void LlamaCuda::upload_optimizer_state(const float* m, const float* v) {
  wait_for_comm();
  for (auto [dev, host] : {std::pair<void*, const float*>{m_, m}, {v_, v}}) {
    if (opts_.optim_state_bf16) {
      const std::vector<bf16> b = gather_pieces<bf16>(pieces_, local_n_, host, to_bf16);
      check(cudaMemcpyAsync(dev, b.data(), local_n_ * sizeof(bf16), cudaMemcpyHostToDevice, stream_), "state");
      check(cudaStreamSynchronize(stream_), "state");
    } else {
      const std::vector<float> f = gather_pieces<float>(pieces_, local_n_, host, identity);
      check(cudaMemcpyAsync(dev, f.data(), local_n_ * sizeof(float), cudaMemcpyHostToDevice, stream_), "state");
      check(cudaStreamSynchronize(stream_), "state");
    }
  }
}

void LlamaCuda::zero_grads() {
  wait_for_comm();
  check(cudaMemsetAsync(grads_, 0, local_n_ * sizeof(float), stream_), "zero grads");
}

// --- FSDP choreography ---------------------------------------------------------
// Two streams: compute (stream_) and communication (comm_stream_). Events
// order them: a gather into a slot waits until compute has released the
// slot's previous unit; compute waits until the gather is ready. Everything
// is issued in the same order on every rank, as NCCL requires.

void LlamaCuda::wait_for_comm() {
  if (!plan_) return;
  check(cudaEventRecord(comm_done_, comm_stream_), "comm event");
  check(cudaStreamWaitEvent(stream_, comm_done_, 0), "wait comm");
}

void LlamaCuda::invalidate_gathered() {
  for (Slot& s : slots_) s.unit = -1;
}

void LlamaCuda::prefetch(int unit, int slot) {
  if (!plan_) return;
  Slot& s = slots_[slot];
  if (s.unit == unit) return;  // still resident from an earlier use
#if defined(INTELLECT_HAVE_NCCL)
  const size_t n = plan_->shard_len(unit);
  check(cudaStreamWaitEvent(comm_stream_, s.free, 0), "wait slot");
  nccl::all_gather(params_ + plan_->local_offset(unit), s.buf, n, nccl::Type::bf16, opts_.comm, comm_stream_);
  check(cudaEventRecord(s.ready, comm_stream_), "slot event");
#endif
  s.unit = unit;
}

LlamaCuda::View LlamaCuda::acquire(int unit, int slot) {
  if (!plan_) return {params_, grads_, 0};
  prefetch(unit, slot);
  check(cudaStreamWaitEvent(stream_, slots_[slot].ready, 0), "wait gather");
  return {static_cast<const bf16*>(slots_[slot].buf), nullptr, plan_->units()[unit].range.begin};
}

void LlamaCuda::release(int slot) {
  if (!plan_) return;
  check(cudaEventRecord(slots_[slot].free, stream_), "release");
}

void LlamaCuda::grad_begin(View& w, int unit, int slot) {
  if (!plan_) return;
  Slot& g = grad_slots_[slot];
  check(cudaStreamWaitEvent(stream_, g.free, 0), "wait grad slot");
  check(cudaMemsetAsync(g.buf, 0, plan_->shard_len(unit) * opts_.world * sizeof(float), stream_), "zero");
  w.g = static_cast<float*>(g.buf);
  w.base = plan_->units()[unit].range.begin;
}

void LlamaCuda::grad_end(int unit, int slot) {
  if (!plan_) return;
#if defined(INTELLECT_HAVE_NCCL)
  Slot& g = grad_slots_[slot];
  const size_t n = plan_->shard_len(unit);
  float* shard = grads_ + plan_->local_offset(unit);
  check(cudaEventRecord(g.ready, stream_), "grad event");
  check(cudaStreamWaitEvent(comm_stream_, g.ready, 0), "wait grad");
  if (opts_.reduce_bf16) {
    cuda::to_bf16(rs_in_bf16_, static_cast<const float*>(g.buf), static_cast<int64_t>(n * opts_.world),
                  comm_stream_);
    nccl::reduce_scatter_sum(rs_in_bf16_, rs_out_, n, nccl::Type::bf16, opts_.comm, comm_stream_);
    cuda::add_into(shard, static_cast<const bf16*>(rs_out_), static_cast<int64_t>(n), comm_stream_);
  } else {
    nccl::reduce_scatter_sum(g.buf, rs_out_, n, nccl::Type::f32, opts_.comm, comm_stream_);
    cuda::add_into(shard, static_cast<const float*>(rs_out_), static_cast<int64_t>(n), comm_stream_);
  }
  check(cudaEventRecord(g.free, comm_stream_), "grad free");
#endif
}

// Device room for a micro-batch's segments and cuDNN's schedule of them, and
// their pinned staging: sized once for the largest micro-batch.
void LlamaCuda::setup_documents() {
  const size_t cu_bytes = (sizeof(int32_t) * (max_batch_ * T_ + 1) + 255) / 256 * 256;
  const size_t bytes = cu_bytes + (cudnn_documents_ ? cudnn_attn_->document_bytes() : 0);
  doc_dev_ = alloc<uint8_t>(bytes);
  check(cudaMallocHost(&doc_host_, bytes), "pinned document staging");
  doc_schedule_at_ = cu_bytes;
}

// Called while the batch is staged (after staging_free_ was waited for, before it is
// recorded again): checks the segments, then copies them, and cuDNN's calls for
// them, in stream order.
void LlamaCuda::stage_documents(const int32_t* cu_seqlens, int64_t n_segments, int64_t B) {
  doc_segments_ = 0;
  if (cu_seqlens == nullptr) return;
  if (doc_dev_ == nullptr)
    fail("forward_backward got document segments but the model was built without document masking "
         "(train.doc_masking / CudaOptions::doc_masking)");
  cpu::check_segments(cu_seqlens, n_segments, B, T_);
  const size_t cu_bytes = sizeof(int32_t) * (n_segments + 1);
  std::memcpy(doc_host_, cu_seqlens, cu_bytes);
  check(cudaMemcpyAsync(doc_dev_, doc_host_, cu_bytes, cudaMemcpyHostToDevice, stream_), "segments");
  if (cudnn_documents_) {
    const size_t n = cudnn_attn_->schedule_documents(cu_seqlens, n_segments, doc_host_ + doc_schedule_at_);
    check(cudaMemcpyAsync(doc_dev_ + doc_schedule_at_, doc_host_ + doc_schedule_at_, n, cudaMemcpyHostToDevice,
                          stream_), "document schedule");
  }
  doc_segments_ = n_segments;
}

void LlamaCuda::attention_forward(const Block& a, int64_t B) {
  if (doc_segments_ > 0) {
    if (cudnn_documents_)
      cudnn_attn_->forward_documents(a.att, a.lse, a.qkv, doc_dev_ + doc_schedule_at_, workspace_);
    else
      cuda::attention_forward(a.att, a.lse, a.qkv, {B, T_, cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim},
                              stream_, reinterpret_cast<const int32_t*>(doc_dev_), doc_segments_);
    return;
  }
  if (cudnn_attn_ && B == cudnn_batch_) {
    cudnn_attn_->forward(a.att, a.lse, a.qkv, workspace_);
  } else {
    cuda::attention_forward(a.att, a.lse, a.qkv,
                            {B, T_, cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim}, stream_);
  }
}

void LlamaCuda::attention_backward(const Block& a, int64_t B) {
  if (doc_segments_ > 0) {  // the path the forward took (the lse layouts differ)
    if (cudnn_documents_)
      cudnn_attn_->backward_documents(dqkv_, datt_, a.qkv, a.att, a.lse, doc_dev_ + doc_schedule_at_, workspace_);
    else
      cuda::attention_backward(dqkv_, attn_scratch_, datt_, a.qkv, a.att, a.lse,
                               {B, T_, cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim}, stream_,
                               reinterpret_cast<const int32_t*>(doc_dev_), doc_segments_);
    return;
  }
  if (cudnn_attn_ && B == cudnn_batch_) {
    cudnn_attn_->backward(dqkv_, datt_, a.qkv, a.att, a.lse, workspace_);
  } else {
    cuda::attention_backward(dqkv_, attn_scratch_, datt_, a.qkv, a.att, a.lse,
                             {B, T_, cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim}, stream_);
  }
}

void LlamaCuda::forward_block(int l, const Block& a, int64_t B, bool recomputing, const View& w) {
  const int64_t N = B * T_, D = cfg_.dim, F = cfg_.ffn_dim;
  const float eps = static_cast<float>(cfg_.norm_eps);
  const BlockOffsets& o = layout_.block(l);
  if (l == 0 || recomputing) {
    // The block's input is already stored: the embedding, or (recomputing) the sum
    // this block wrote during the forward pass.
    cuda::residual_rmsnorm_forward(nullptr, a.norm1, a.rstd1, resid_[l], nullptr,
                                   w.param(o.attn_norm), N, D, eps, stream_);
  } else {
    // The previous block's MLP output (proj_) joins the residual stream here,
    // fused with this block's first norm.
    cuda::residual_rmsnorm_forward(resid_[l], a.norm1, a.rstd1, blocks_[l - 1].resid_mid, proj_,
                                   w.param(o.attn_norm), N, D, eps, stream_);
  }
  blas_->forward(a.qkv, a.norm1, w.param(o.wqkv), N, cfg_.qkv_dim(), D);
  cuda::rope_apply(a.qkv, B, T_, cfg_.n_heads + cfg_.n_kv_heads, cfg_.qkv_dim(), cfg_.head_dim,
                   rope_cos_, rope_sin_, false, stream_);
  attention_forward(a, B);
  blas_->forward(proj_, a.att, w.param(o.wo), N, D, cfg_.q_dim());
  cuda::residual_rmsnorm_forward(a.resid_mid, a.norm2, a.rstd2, resid_[l], proj_,
                                 w.param(o.mlp_norm), N, D, eps, stream_);
  blas_->forward(a.gate_up, a.norm2, w.param(o.w_gate_up), N, 2 * F, D);
  cuda::swiglu_forward(a.act, a.gate_up, N, F, stream_);
  blas_->forward(proj_, a.act, w.param(o.w_down), N, D, F);  // added by the next fused norm
}

void LlamaCuda::backward_block(int l, const Block& a, int64_t B, const View& w) {
  const int64_t N = B * T_, D = cfg_.dim, F = cfg_.ffn_dim;
  const BlockOffsets& o = layout_.block(l);
  blas_->backward(dact_, w.grad(o.w_down), dresid_, a.act, w.param(o.w_down), N, D, F);
  cuda::swiglu_backward(dgate_up_, dact_, a.gate_up, N, F, stream_);
  blas_->backward(dnorm_, w.grad(o.w_gate_up), dgate_up_, a.norm2, w.param(o.w_gate_up), N, 2 * F, D);
  cuda::rmsnorm_backward(dresid_, w.grad(o.mlp_norm), norm_scratch_, dnorm_, a.resid_mid, w.param(o.mlp_norm),
                         a.rstd2, N, D, true, stream_);
  blas_->backward(datt_, w.grad(o.wo), dresid_, a.att, w.param(o.wo), N, D, cfg_.q_dim());
  attention_backward(a, B);
  cuda::rope_apply(dqkv_, B, T_, cfg_.n_heads + cfg_.n_kv_heads, cfg_.qkv_dim(), cfg_.head_dim,
                   rope_cos_, rope_sin_, true, stream_);
  blas_->backward(dnorm_, w.grad(o.wqkv), dqkv_, a.norm1, w.param(o.wqkv), N, cfg_.qkv_dim(), D);
  cuda::rmsnorm_backward(dresid_, w.grad(o.attn_norm), norm_scratch_, dnorm_, resid_[l], w.param(o.attn_norm),
                         a.rstd1, N, D, true, stream_);
}

void LlamaCuda::classifier(int64_t B, float z_weight, float grad_scale, bool backward,
                           float* logits_host, const View& w) {
  const int64_t N = B * T_, D = cfg_.dim, V = cfg_.vocab_size;
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows_) {
    const int64_t rows = std::min(chunk_rows_, N - r0);
    blas_->forward(logits_, norm_f_ + r0 * D, w.param(layout_.lm_head()), rows, V, D);
    float* f32 = nullptr;
    if (logits_host) {
      if (!logits_f32_) logits_f32_ = alloc<float>(chunk_rows_ * V);  // only for inspection tools
      f32 = logits_f32_;
    }
    cuda::cross_entropy_forward_backward(logits_, row_ce_ + r0, row_z_ + r0, f32, targets_ + r0, rows, V,
                                         z_weight, grad_scale, stream_);
    if (logits_host) {
      check(cudaMemcpyAsync(logits_host + r0 * V, f32, rows * V * sizeof(float), cudaMemcpyDeviceToHost,
                            stream_), "logits");
      check(cudaStreamSynchronize(stream_), "logits");
    }
    if (backward)
      blas_->backward(dnorm_ + r0 * D, w.grad(layout_.lm_head()), logits_, norm_f_ + r0 * D,
                      w.param(layout_.lm_head()), rows, V, D);
  }
  cuda::accumulate_loss(loss_dev_, row_ce_, row_z_, targets_, N, stream_);
}

void LlamaCuda::forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B,
                                 float z_weight, float grad_scale, bool backward,
                                 float* logits_host, const int32_t* cu_seqlens, int64_t n_segments) {
  if (B > max_batch_) fail("micro-batch of ", B, " sequences exceeds the ", max_batch_, " planned");
  const int64_t N = B * T_, D = cfg_.dim, V = cfg_.vocab_size;
  const float eps = static_cast<float>(cfg_.norm_eps);
  check_token_ids(tokens, targets, N, V);
  // Stage the batch (and the embedding-backward buckets) through pinned memory;
  // wait only until the previous batch's copies have left it.
  check(cudaEventSynchronize(staging_free_), "staging");
  stage_documents(cu_seqlens, n_segments, B);  // first: it checks the segments before anything is queued
  const cpu::TokenBuckets buckets = cpu::bucket_tokens(tokens, N);
  n_buckets_ = static_cast<int64_t>(buckets.tokens.size());
  int32_t* s = staging_;
  std::memcpy(s, tokens, N * 4);
  std::memcpy(s + N, targets, N * 4);
  std::memcpy(s + 2 * N, buckets.positions.data(), N * 4);
  std::memcpy(s + 3 * N, buckets.tokens.data(), n_buckets_ * 4);
  std::memcpy(s + 4 * N, buckets.starts.data(), (n_buckets_ + 1) * 4);
  check(cudaMemcpyAsync(tokens_, s, N * 4, cudaMemcpyHostToDevice, stream_), "tokens");
  check(cudaMemcpyAsync(targets_, s + N, N * 4, cudaMemcpyHostToDevice, stream_), "targets");
  check(cudaMemcpyAsync(bucket_pos_, s + 2 * N, N * 4, cudaMemcpyHostToDevice, stream_), "buckets");
  check(cudaMemcpyAsync(bucket_tok_, s + 3 * N, n_buckets_ * 4, cudaMemcpyHostToDevice, stream_), "buckets");
  check(cudaMemcpyAsync(bucket_start_, s + 4 * N, (n_buckets_ + 1) * 4, cudaMemcpyHostToDevice, stream_),
        "buckets");
  check(cudaEventRecord(staging_free_, stream_), "staging event");

  // Units: 0 the embedding, 1 + l block l, L + 1 the head. Blocks alternate
  // between slots 0 and 1 so the next block gathers while this one computes;
  // the embedding and the head share the third.
  const int L = static_cast<int>(cfg_.n_layers), head = L + 1;
  auto unit = [](int l) { return 1 + l; };
  auto slot = [](int l) { return l % 2; };
  prefetch(0, kBigSlot);
  prefetch(unit(0), slot(0));
  if (L > 1) prefetch(unit(1), slot(1));
  const View ew = acquire(0, kBigSlot);
  cuda::embedding_forward(resid_[0], tokens_, ew.param(layout_.embed()), N, D, stream_);
  release(kBigSlot);
  prefetch(head, kBigSlot);
  for (int l = 0; l < L; ++l) {
    const View w = acquire(unit(l), slot(l));
    forward_block(l, blocks_[l], B, false, w);
    release(slot(l));
    if (l + 2 < L) prefetch(unit(l + 2), slot(l));
  }
  View hw = acquire(head, kBigSlot);
  if (backward) grad_begin(hw, head, kBigSlot);
  cuda::residual_rmsnorm_forward(resid_[L], norm_f_, rstd_f_, blocks_[L - 1].resid_mid, proj_,
                                 hw.param(layout_.final_norm()), N, D, eps, stream_);
  classifier(B, z_weight, grad_scale, backward, logits_host, hw);
  if (!backward) {
    release(kBigSlot);
    return;
  }

  // dnorm_ holds ∂L/∂norm_f from the classifier.
  cuda::rmsnorm_backward(dresid_, hw.grad(layout_.final_norm()), norm_scratch_, dnorm_, resid_[L],
                         hw.param(layout_.final_norm()), rstd_f_, N, D, false, stream_);
  release(kBigSlot);
  grad_end(head, kBigSlot);
  for (int l = L - 1; l >= 0; --l) {
    View w = acquire(unit(l), slot(l));  // the last two are still resident from the forward pass
    grad_begin(w, unit(l), slot(l));
    if (opts_.recompute[l]) forward_block(l, blocks_[l], B, true, w);  // from its stored input
    backward_block(l, blocks_[l], B, w);
    release(slot(l));
    grad_end(unit(l), slot(l));
    if (l - 2 >= 0) prefetch(unit(l - 2), slot(l));
  }
  View eg = plan_ ? View{} : View{params_, grads_, 0};
  grad_begin(eg, 0, kBigSlot);
  cuda::embedding_backward(eg.grad(layout_.embed()), dresid_, bucket_pos_, bucket_start_, bucket_tok_,
                           n_buckets_, D, stream_);
  grad_end(0, kBigSlot);
}

cpu::LossSums LlamaCuda::take_loss() {
  check(cudaMemcpyAsync(loss_host_, loss_dev_, 3 * sizeof(double), cudaMemcpyDeviceToHost, stream_),
        "loss");
  check(cudaMemsetAsync(loss_dev_, 0, 3 * sizeof(double), stream_), "loss reset");
  check(cudaStreamSynchronize(stream_), "loss");
  cpu::LossSums s;
  s.ce = loss_host_[0];
  s.z = loss_host_[1];
  s.n_valid = static_cast<int64_t>(loss_host_[2]);
  return s;
}

CudaStepStats LlamaCuda::optimizer_step(double lr, double beta1, double beta2, double eps,
                                        double weight_decay, double grad_clip, int64_t step,
                                        uint64_t seed) {
  const cuda::DecayRanges ranges{decay_bounds_, decay_flags_, n_decay_ranges_};
  const cuda::AdamWArgs args{static_cast<float>(lr),  static_cast<float>(beta1),
                             static_cast<float>(beta2), static_cast<float>(eps),
                             static_cast<float>(weight_decay), step,
                             static_cast<float>(grad_clip), seed};
  const float* global_ss = nullptr;
  if (plan_) {
    // The clip needs the norm over every shard: Σg² here, summed over the node.
#if defined(INTELLECT_HAVE_NCCL)
    wait_for_comm();
    cuda::grad_sum_squares(grads_, static_cast<int64_t>(local_n_), sum_squares_, adam_scratch_, stream_);
    // On the comm stream: NCCL calls of one communicator stay in one stream's order.
    check(cudaEventRecord(compute_done_, stream_), "event");
    check(cudaStreamWaitEvent(comm_stream_, compute_done_, 0), "wait");
    nccl::all_reduce_sum(sum_squares_, sum_squares_, 1, nccl::Type::f32, opts_.comm, comm_stream_);
    wait_for_comm();
    global_ss = sum_squares_;
#endif
  }
  cuda::adamw_step(params_, master_, grads_, m_, v_, opts_.optim_state_bf16, static_cast<int64_t>(local_n_),
                   ranges, args, norm_dev_, adam_scratch_, stream_, global_ss);
  if (plan_) {
    // The next gathers read the updated shards.
    check(cudaEventRecord(compute_done_, stream_), "event");
    check(cudaStreamWaitEvent(comm_stream_, compute_done_, 0), "wait");
    invalidate_gathered();
  }
  check(cudaMemcpyAsync(norm_host_, norm_dev_, sizeof(float), cudaMemcpyDeviceToHost, stream_), "norm");
  CudaStepStats st;
  st.loss = take_loss();  // synchronises the stream, so norm_host_ is ready too
  st.grad_norm = *norm_host_;
  return st;
}

}  // namespace intellect
#endif
