#ifdef INTELLECT_HAVE_CUDA
#include "model/llama_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/attention_cudnn.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda_device.h"
#include "kernels/embedding.h"
#include "kernels/grad_shard.h"
#include "kernels/fp8.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "dist/fsdp_weights.h"
#include "model/deferred_update.h"
#include "model/resident_weights.h"
#include "util/error.h"

namespace intellect {

using cuda::bf16;

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(e));
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
  // Zeroed once, here, never in a step: a read of rows a step did not write
  // then sees zeros, not an earlier run's data; and compute-sanitizer's
  // initcheck, which does not see the stores of cuBLAS's GEMM kernels
  // (SanitizerProbe.CublasOutputsReadByRopeAndAttention shows it), stops
  // reporting every read of a GEMM's output as uninitialized.
  // Waited for: other streams (the optimizer's) may write the buffer next.
  check(cudaMemsetAsync(p, 0, bytes, stream_), "zeroing a new allocation");
  check(cudaStreamSynchronize(stream_), "zeroing a new allocation");
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
  if (!opts_.recompute.automatic && static_cast<int64_t>(opts_.recompute.blocks.size()) != cfg.n_layers)
    fail("recompute: expected one level per block (", cfg.n_layers, "), got ", opts_.recompute.blocks.size());
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
  check(cudaEventCreateWithFlags(&staging_free_, cudaEventDisableTiming), "event");

  const auto device_alloc = [this](size_t bytes) { return static_cast<void*>(alloc<uint8_t>(bytes)); };
  std::unique_ptr<FsdpWeights> fsdp;
  if (opts_.world > 1 || opts_.rank != 0) {
    if (opts_.grads_bf16)
      fail("bf16 gradients are for one GPU: FSDP accumulates each rank's gradient shard in fp32 "
           "(set precision.grad_dtype to \"fp32\" or \"auto\"; precision.grad_reduce_dtype halves the bytes sent)");
    fsdp = std::make_unique<FsdpWeights>(layout_, opts_.rank, opts_.world, opts_.collectives, opts_.reduce_bf16, stream_,
                                         device_alloc);
    local_n_ = fsdp->local_elements();
  } else {
    local_n_ = layout_.total();
  }
  const std::vector<ShardPiece> pieces = fsdp ? fsdp->pieces() : std::vector<ShardPiece>{{0, 0, layout_.total()}};
  const int64_t P = static_cast<int64_t>(local_n_);
  const int64_t N = max_batch * seq_len, D = cfg.dim, F = cfg.ffn_dim, V = cfg.vocab_size;
  params_ = alloc<bf16>(P);
  grads_ = alloc<uint8_t>(P * grad_elem_bytes());
  check(cudaMemsetAsync(grads_, 0, P * grad_elem_bytes(), stream_), "memset grads");
  // Weight-decay ranges: matrices decay; norm gains and the embedding only if asked.
  std::vector<int64_t> bounds;
  std::vector<uint8_t> flags;
  local_decay_ranges(layout_, pieces, local_n_, opts_.decay_norms_and_embeddings, bounds, flags);
  adam_ = std::make_unique<CudaAdamW>(local_n_, opts_.master_weights, opts_.optim_state_bf16, bounds, flags,
                                      device_alloc, stream_);
  if (fsdp) {
    fsdp->bind(params_, static_cast<float*>(grads_));
    fsdp_ = fsdp.get();
    weights_ = std::move(fsdp);
  } else {
    update_ = std::make_unique<DeferredUpdate>(*adam_, layout_, params_, grads_, opts_.grads_bf16);
    weights_ = std::make_unique<ResidentWeights>(local_n_, params_, grads_, opts_.grads_bf16, *update_, stream_);
  }
  loss_dev_ = alloc<double>(3);
  check(cudaMemsetAsync(loss_dev_, 0, 3 * sizeof(double), stream_), "memset loss");

  norm_f_ = alloc<bf16>(N * D);
  rstd_f_ = alloc<float>(N);
  proj_ = alloc<bf16>(N * D);
  chunk_rows_ = classifier_chunk_rows(N, V);
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
  {
    // Every GEMM shape of a micro-batch, timed against cuBLASLt's candidates
    // once (its scratch buffers are freed before the memory plan is made).
    std::vector<cuda::Blas::Shape> shapes;
    const bool dw_bf16 = opts_.grads_bf16;
    for (const bool acc : {false, true}) {
      if (fsdp_ && !acc) continue;  // FSDP's unit buffers are zeroed and added into
      for (const auto& [m, n, k] : std::vector<std::array<int64_t, 3>>{
               {N, cfg.qkv_dim(), D}, {N, D, cfg.q_dim()}, {N, 2 * F, D}, {N, D, F}, {chunk_rows_, V, D},
               {N % chunk_rows_, V, D}})
        if (m > 0) shapes.push_back({m, n, k, dw_bf16, acc});
    }
    gemm_tuning_ = blas_->tune(shapes);
  }
  if (opts_.doc_masking) setup_documents();
  if (opts_.fp8) allocate_fp8();
  // Last, so the plan sees what everything else took.
  allocate_activations(max_batch, seq_len);
  check(cudaStreamSynchronize(stream_), "init");
}

// Slots of fp8_slots_, kFp8SlotBytes apart (cuBLASLt's FP8 kernels want aligned
// pointers, scales included): the inverse scales of the operands in hand and
// the output gradient's amax; then per block its four weights' amax and its
// four linear inputs' amax, kept from the forward pass for the backward one;
// then (opts_.fp8_classifier) the head weight's amax and a chunk input's.
namespace {
enum Fp8Slot { kInScaleInv, kGradAmax, kGradScaleInv, kWeightScaleInv, kWeightTScaleInv, kInTScaleInv, kGradTScaleInv };
static_assert(kGradTScaleInv + 1 == kFp8FixedSlots);
constexpr int kSlotFloats = kFp8SlotBytes / sizeof(float);
float* slot(float* slots, int i) { return slots + kSlotFloats * i; }
float* weight_amax(float* slots, int l, int which) { return slot(slots, kFp8FixedSlots + kFp8SlotsPerBlock * l + which); }
float* input_amax(float* slots, int l, int which) {
  return slot(slots, kFp8FixedSlots + kFp8SlotsPerBlock * l + 4 + which);
}
float* classifier_amax(float* slots, int n_layers, int which) {  // 0 the head's weight, 1 a chunk's input
  return slot(slots, kFp8FixedSlots + kFp8SlotsPerBlock * n_layers + which);
}
}  // namespace

void LlamaCuda::allocate_fp8() {
  std::vector<std::pair<const char*, int64_t>> dims = {
      {"model.dim", cfg_.dim}, {"the query width (n_heads x head_dim)", cfg_.q_dim()},
      {"the q|k|v width", cfg_.qkv_dim()}, {"model.ffn_dim", cfg_.ffn_dim}, {"train.seq_len", T_}};
  if (opts_.fp8_classifier) dims.push_back({"model.vocab_size (precision.fp8_classifier)", cfg_.vocab_size});
  for (const auto& [what, v] : dims)
    if (v % 16 != 0)
      fail("precision.matmul \"fp8\" needs every GEMM dimension to be a multiple of 16 (cuBLASLt's FP8 "
           "kernels), but ", what, " is ", v, "; use precision.matmul \"bf16\" with this model");
  // What the memory estimate counts.
  const Fp8Scratch sizes = fp8_scratch(cfg_, max_batch_ * T_, opts_.fp8_classifier);
  x8_ = alloc<uint8_t>(sizes.input);
  g8_ = alloc<uint8_t>(sizes.grad);
  w8_ = alloc<uint8_t>(sizes.weight);
  wt8_ = alloc<uint8_t>(sizes.weight);
  fp8_slots_ = alloc<float>(kSlotFloats * sizes.slots);
}

void LlamaCuda::fp8_cast_weight(float* w_amax, const bf16* w, int64_t N, int64_t K) {
  cuda::absmax(w_amax, w, N * K, stream_);
  cuda::fp8_cast(w8_, slot(fp8_slots_, kWeightScaleInv), w, N * K, w_amax, Fp8Format::e4m3, stream_);
}

void LlamaCuda::fp8_cast_weight_t(const float* w_amax, const bf16* w, int64_t N, int64_t K) {
  cuda::fp8_cast_transposed(wt8_, slot(fp8_slots_, kWeightTScaleInv), w, N, K, w_amax, Fp8Format::e4m3, stream_);
}

void LlamaCuda::fp8_forward(float* in_amax, bf16* out, const bf16* in, int64_t M, int64_t N, int64_t K) {
  float* s = fp8_slots_;
  cuda::absmax(in_amax, in, M * K, stream_);
  cuda::fp8_cast(x8_, slot(s, kInScaleInv), in, M * K, in_amax, Fp8Format::e4m3, stream_);
  blas_->forward_fp8(out, x8_, slot(s, kInScaleInv), w8_, slot(s, kWeightScaleInv), M, N, K);
}

void LlamaCuda::linear_forward(int l, int which, bf16* out, const bf16* in, const bf16* w, int64_t M, int64_t N,
                               int64_t K) {
  if (!opts_.fp8) return blas_->forward(out, in, w, M, N, K);
  fp8_cast_weight(weight_amax(fp8_slots_, l, which), w, N, K);
  fp8_forward(input_amax(fp8_slots_, l, which), out, in, M, N, K);
}

// The input gradient runs in FP8 against the weight transposed, scaled by
// the amax its forward pass kept (the weights do not change between the two
// passes). The weight gradient is a bf16 product unless opts_.fp8_dw: then
// the output gradient and the input, cast transposed (tokens contiguous, as
// cuBLASLt's FP8 kernels take the reduction dimension) into the buffers the
// input gradient's product has finished with (stream order), by the amax
// of each that is already known.
void LlamaCuda::fp8_backward(const float* w_amax, const float* in_amax, bool cast_weight_t, bf16* din,
                             const cuda::GradOut& dw, const bf16* dout, const bf16* in, const bf16* w, int64_t M,
                             int64_t N, int64_t K) {
  float* s = fp8_slots_;
  cuda::absmax(slot(s, kGradAmax), dout, M * N, stream_);
  if (din) {
    cuda::fp8_cast(g8_, slot(s, kGradScaleInv), dout, M * N, slot(s, kGradAmax), Fp8Format::e5m2, stream_);
    if (cast_weight_t) fp8_cast_weight_t(w_amax, w, N, K);
    blas_->input_grad_fp8(din, g8_, slot(s, kGradScaleInv), wt8_, slot(s, kWeightTScaleInv), M, N, K);
  }
  if (!dw.p) return;
  if (!opts_.fp8_dw) return blas_->backward(nullptr, dw, dout, in, w, M, N, K);
  cuda::fp8_cast_transposed(g8_, slot(s, kGradTScaleInv), dout, M, N, slot(s, kGradAmax), Fp8Format::e5m2, stream_);
  cuda::fp8_cast_transposed(x8_, slot(s, kInTScaleInv), in, M, K, in_amax, Fp8Format::e4m3, stream_);
  blas_->weight_grad_fp8(dw, g8_, slot(s, kGradTScaleInv), x8_, slot(s, kInTScaleInv), M, N, K);
}

void LlamaCuda::linear_backward(int l, int which, bf16* din, const cuda::GradOut& dw, const bf16* dout,
                                const bf16* in, const bf16* w, int64_t M, int64_t N, int64_t K) {
  if (!opts_.fp8) return blas_->backward(din, dw, dout, in, w, M, N, K);
  fp8_backward(weight_amax(fp8_slots_, l, which), input_amax(fp8_slots_, l, which), true, din, dw, dout, in, w, M,
               N, K);
}

// Per-block activations at the levels of the memory plan: planned from the
// memory still free (less a reserve for the CUDA context's lazily loaded
// kernels and libraries' internal buffers), or as configured.
void LlamaCuda::allocate_activations(int64_t max_batch, int64_t seq_len) {
  const int64_t N = max_batch * seq_len, D = cfg_.dim, F = cfg_.ffn_dim, L = cfg_.n_layers;
  const BlockBytes bytes = block_activation_bytes(cfg_, max_batch, seq_len);
  for (int64_t l = 0; l <= L; ++l) resid_.push_back(alloc<bf16>(N * D));
  if (opts_.recompute.automatic) {
    size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "memory info");
    if (opts_.memory_limit > 0) {
      // As if the GPU had memory_limit bytes: what is in use counts against it.
      const size_t used = total_bytes - free_bytes;
      free_bytes = opts_.memory_limit > used ? opts_.memory_limit - used : 0;
    }
    const size_t reserve = size_t(3) << 29;  // 1.5 GiB
    const size_t budget = free_bytes > reserve ? free_bytes - reserve : 0;
    mem_plan_ = plan_recompute(bytes, L, budget);
  } else {
    mem_plan_ = fixed_plan(bytes, opts_.recompute.blocks);
  }
  bool any_ops = false, any_full = false;
  for (Recompute r : mem_plan_.blocks) {
    any_ops |= r != Recompute::none;
    any_full |= r == Recompute::full;
  }
  bf16 *shared_norm = any_ops ? alloc<bf16>(N * D) : nullptr, *shared_act = any_ops ? alloc<bf16>(N * F) : nullptr;
  const auto kept = [&](Block& b) {
    b.qkv = alloc<bf16>(N * cfg_.qkv_dim());
    b.att = alloc<bf16>(N * cfg_.q_dim());
    b.resid_mid = alloc<bf16>(N * D);
    b.gate_up = alloc<bf16>(N * 2 * F);
    b.rstd1 = alloc<float>(N);
    b.rstd2 = alloc<float>(N);
    b.lse = alloc<float>(max_batch * cfg_.n_heads * seq_len);
  };
  if (any_full) {
    kept(shared_block_);
    shared_block_.norm1 = shared_block_.norm2 = shared_norm;
    shared_block_.act = shared_act;
    shared_block_.level = Recompute::full;
  }
  blocks_.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    Block& b = blocks_[l];
    switch (mem_plan_.blocks[l]) {
      case Recompute::none:
        kept(b);
        b.norm1 = alloc<bf16>(N * D);
        b.norm2 = alloc<bf16>(N * D);
        b.act = alloc<bf16>(N * F);
        break;
      case Recompute::ops:
        kept(b);
        b.norm1 = b.norm2 = shared_norm;  // never live at once
        b.act = shared_act;
        break;
      case Recompute::full:
        b = shared_block_;
        break;
    }
    b.level = mem_plan_.blocks[l];
  }
}

LlamaCuda::~LlamaCuda() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (int i = 0; i < 2; ++i) {
    if (stage_free_[i]) cudaEventDestroy(stage_free_[i]);
    if (stage_[i]) cudaFreeHost(stage_[i]);
  }
  if (dma_scratch_) cudaFree(dma_scratch_);
  weights_.reset();  // its streams finish first
  update_.reset();
  cudnn_attn_.reset();
  blas_.reset();
  for (void* p : allocations_) cudaFree(p);
  if (staging_) cudaFreeHost(staging_);
  if (loss_host_) cudaFreeHost(loss_host_);
  if (norm_host_) cudaFreeHost(norm_host_);
  if (doc_host_) cudaFreeHost(doc_host_);
  if (staging_free_) cudaEventDestroy(staging_free_);
  for (cudaEvent_t e : phase_ev_)
    if (e) cudaEventDestroy(e);
  if (stream_) cudaStreamDestroy(stream_);
}

std::string LlamaCuda::attention_impl() const {
  std::string s = cudnn_attn_ ? "cuDNN fused SDPA" : "fallback flash-style kernel";
  if (opts_.doc_masking)
    s += cudnn_documents_ ? ", masked per document (cuDNN ragged SDPA)" : ", masked per document (fallback kernel)";
  return s;
}

std::string LlamaCuda::attention_plans() const { return cudnn_attn_ ? cudnn_attn_->describe() : std::string(); }

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

namespace {
constexpr size_t kStageBytes = size_t{64} << 20;  // per staging buffer

// A chunk's copy between pinned staging and the caller's pageable buffer in
// eight parts: one thread's memcpy ran at about 3 GB/s and was most of an
// outer step's boundary on the 150m config (0.35-0.45 s each way).
void parallel_copy(void* dst, const void* src, size_t bytes) {
  const int64_t parts = bytes >= (size_t{8} << 20) ? 8 : 1;
#pragma omp parallel for schedule(static) if (parts > 1)
  for (int64_t p = 0; p < parts; ++p) {
    const size_t lo = bytes * p / parts, hi = bytes * (p + 1) / parts;
    std::memcpy(static_cast<uint8_t*>(dst) + lo, static_cast<const uint8_t*>(src) + lo, hi - lo);
  }
}
void copy_f32(const float* src, void* dst, size_t n) { parallel_copy(dst, src, n * sizeof(float)); }
void to_bf16_n(const float* src, void* dst, size_t n) {
  bf16* d = static_cast<bf16*>(dst);
#pragma omp parallel for schedule(static) if (n > (size_t{1} << 20))
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) d[i] = __float2bfloat16(src[i]);
}
void copy_back_f32(const void* src, float* dst, size_t n) { parallel_copy(dst, src, n * sizeof(float)); }
void from_bf16_n(const void* src, float* dst, size_t n) {
  const bf16* s = static_cast<const bf16*>(src);
#pragma omp parallel for schedule(static) if (n > (size_t{1} << 20))
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) dst[i] = __bfloat162float(s[i]);
}

// Calls fn(local, flat, len) for the parts of local range [lo, hi) that
// pieces cover, and gap(local, len) for those none covers (padding).
template <class Fn, class Gap>
void for_local_range(const std::vector<ShardPiece>& pieces, size_t lo, size_t hi, Fn fn, Gap gap) {
  size_t at = lo;
  for (const ShardPiece& pc : pieces) {
    const size_t b = std::max(lo, pc.local_begin), e = std::min(hi, pc.local_begin + pc.len);
    if (b >= e) continue;
    if (b > at) gap(at, b - at);
    fn(b, pc.flat_begin + (b - pc.local_begin), e - b);
    at = e;
  }
  if (at < hi) gap(at, hi - at);
}
}  // namespace

// Allocated at the first outer step, not at construction: a model that never
// takes part in DiLoCo pins no host memory.
void LlamaCuda::ensure_staging() {
  if (stage_[0]) return;
  for (int i = 0; i < 2; ++i) {
    check(cudaMallocHost(&stage_[i], kStageBytes), "pinned staging buffer");
    check(cudaEventCreateWithFlags(&stage_free_[i], cudaEventDisableTiming), "staging event");
    check(cudaEventRecord(stage_free_[i], stream_), "staging event");
  }
}

void LlamaCuda::stage_to_device(void* dst, size_t elem_bytes, const float* host,
                                void (*convert)(const float* src, void* dst, size_t n)) {
  const size_t per_chunk = kStageBytes / elem_bytes;
  for (size_t lo = 0, c = 0; lo < local_n_; lo += per_chunk, ++c) {
    const size_t hi = std::min(local_n_, lo + per_chunk), k = c % 2;
    check(cudaEventSynchronize(stage_free_[k]), "staging buffer");  // its previous copy has finished
    uint8_t* buf = static_cast<uint8_t*>(stage_[k]);
    for_local_range(
        weights_->pieces(), lo, hi, [&](size_t local, size_t flat, size_t len) { convert(host + flat, buf + (local - lo) * elem_bytes, len); },
        [&](size_t local, size_t len) { std::memset(buf + (local - lo) * elem_bytes, 0, len * elem_bytes); });
    check(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + lo * elem_bytes, buf, (hi - lo) * elem_bytes,
                          cudaMemcpyHostToDevice, stream_),
          "staged upload");
    check(cudaEventRecord(stage_free_[k], stream_), "staging event");
  }
}

void LlamaCuda::stage_from_device(const void* src, size_t elem_bytes, float* host,
                                  void (*convert)(const void* src, float* dst, size_t n)) {
  const size_t per_chunk = kStageBytes / elem_bytes;
  const size_t chunks = (local_n_ + per_chunk - 1) / per_chunk;
  auto issue = [&](size_t c) {
    const size_t lo = c * per_chunk, hi = std::min(local_n_, lo + per_chunk);
    check(cudaMemcpyAsync(stage_[c % 2], static_cast<const uint8_t*>(src) + lo * elem_bytes, (hi - lo) * elem_bytes,
                          cudaMemcpyDeviceToHost, stream_),
          "staged download");
    check(cudaEventRecord(stage_free_[c % 2], stream_), "staging event");
  };
  if (chunks > 0) issue(0);
  for (size_t c = 0; c < chunks; ++c) {
    if (c + 1 < chunks) issue(c + 1);  // the next chunk copies while this one converts
    check(cudaEventSynchronize(stage_free_[c % 2]), "staged download");
    const size_t lo = c * per_chunk, hi = std::min(local_n_, lo + per_chunk);
    const uint8_t* buf = static_cast<const uint8_t*>(stage_[c % 2]);
    for_local_range(
        weights_->pieces(), lo, hi, [&](size_t local, size_t flat, size_t len) { convert(buf + (local - lo) * elem_bytes, host + flat, len); },
        [](size_t, size_t) {});
  }
}

void LlamaCuda::direct_to_device(const float* host, float* master) {
  const size_t per_chunk = kStageBytes / sizeof(float);
  if (!master && !dma_scratch_) check(cudaMalloc(&dma_scratch_, kStageBytes), "outer-step DMA scratch");
  for_local_range(
      weights_->pieces(), 0, local_n_,
      [&](size_t local, size_t flat, size_t len) {
        if (master) {
          check(cudaMemcpyAsync(master + local, host + flat, len * sizeof(float), cudaMemcpyHostToDevice, stream_),
                "upload");
          return;
        }
        for (size_t off = 0; off < len; off += per_chunk) {
          const size_t n = std::min(per_chunk, len - off);
          check(cudaMemcpyAsync(dma_scratch_, host + flat + off, n * sizeof(float), cudaMemcpyHostToDevice, stream_),
                "upload");
          cuda::to_bf16(params_ + local + off, dma_scratch_, static_cast<int64_t>(n), stream_);
        }
      },
      [&](size_t local, size_t len) {
        check(master ? cudaMemsetAsync(master + local, 0, len * sizeof(float), stream_)
                     : cudaMemsetAsync(params_ + local, 0, len * sizeof(bf16), stream_),
              "upload padding");
      });
}

void LlamaCuda::direct_from_device(float* host, const float* master) {
  const size_t per_chunk = kStageBytes / sizeof(float);
  if (!master && !dma_scratch_) check(cudaMalloc(&dma_scratch_, kStageBytes), "outer-step DMA scratch");
  for_local_range(
      weights_->pieces(), 0, local_n_,
      [&](size_t local, size_t flat, size_t len) {
        if (master) {
          check(cudaMemcpyAsync(host + flat, master + local, len * sizeof(float), cudaMemcpyDeviceToHost, stream_),
                "download");
          return;
        }
        for (size_t off = 0; off < len; off += per_chunk) {
          const size_t n = std::min(per_chunk, len - off);
          cuda::to_f32(dma_scratch_, params_ + local + off, static_cast<int64_t>(n), stream_);
          check(cudaMemcpyAsync(host + flat + off, dma_scratch_, n * sizeof(float), cudaMemcpyDeviceToHost, stream_),
                "download");
        }
      },
      [](size_t, size_t) {});
  check(cudaStreamSynchronize(stream_), "download");
}

void LlamaCuda::upload_params(const float* host) {
  flush_updates();  // the step's update comes first; these weights replace its result
  weights_->wait_for_comm();
  float* master = adam_->master();
  if (cuda::is_pinned_host(host)) {
    direct_to_device(host, master);
    if (master) cuda::to_bf16(params_, master, static_cast<int64_t>(local_n_), stream_);
  } else if (master) {
    ensure_staging();
    // The fp32 master crosses once; its bf16 rounding is taken on the GPU
    // (round to nearest even, as the host's conversion), not converted and
    // sent a second time.
    stage_to_device(master, sizeof(float), host, copy_f32);
    cuda::to_bf16(params_, master, static_cast<int64_t>(local_n_), stream_);
  } else {
    ensure_staging();
    stage_to_device(params_, sizeof(bf16), host, to_bf16_n);
  }
  check(cudaStreamSynchronize(stream_), "upload");
  weights_->params_changed();
}

void LlamaCuda::download_params(float* host) {
  flush_updates();
  weights_->wait_for_comm();
  float* master = adam_->master();
  if (cuda::is_pinned_host(host)) {
    direct_from_device(host, master);
    return;
  }
  ensure_staging();
  if (master) stage_from_device(master, sizeof(float), host, copy_back_f32);
  else stage_from_device(params_, sizeof(bf16), host, from_bf16_n);
}

void LlamaCuda::download_grads(float* host) {
  weights_->wait_for_comm();
  if (grads_zero_) {
    std::fill(host, host + layout_.total(), 0.0f);
    return;
  }
  if (opts_.grads_bf16) {
    std::vector<bf16> b(local_n_);
    check(cudaMemcpyAsync(b.data(), grads_, local_n_ * sizeof(bf16), cudaMemcpyDeviceToHost, stream_), "grads");
    check(cudaStreamSynchronize(stream_), "download grads");
    scatter_pieces(weights_->pieces(), b, host, from_bf16);
    return;
  }
  std::vector<float> f(local_n_);
  check(cudaMemcpyAsync(f.data(), grads_, local_n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_), "grads");
  check(cudaStreamSynchronize(stream_), "download grads");
  scatter_pieces(weights_->pieces(), f, host, identity);
}

// Through the pinned staging buffers, as the weights' staged download: each
// chunk converted on every core while the next one copies. A donor takes
// this on its training thread for every joiner's snapshot; before, each
// array went through a fresh pageable vector (zeroed, then copied by the
// driver) and a one-thread scatter, about a second per GB.
void LlamaCuda::download_optimizer_state(float* m, float* v) {
  flush_updates();
  weights_->wait_for_comm();
  ensure_staging();
  const bool b16 = opts_.optim_state_bf16;
  for (auto [dev, host] : {std::pair<const void*, float*>{adam_->m(), m}, {adam_->v(), v}})
    stage_from_device(dev, b16 ? sizeof(bf16) : sizeof(float), host, b16 ? from_bf16_n : copy_back_f32);
  check(cudaStreamSynchronize(stream_), "state download");
}

void LlamaCuda::upload_optimizer_state(const float* m, const float* v) {
  flush_updates();
  weights_->wait_for_comm();
  for (auto [dev, host] : {std::pair<void*, const float*>{adam_->m(), m}, {adam_->v(), v}}) {
    if (opts_.optim_state_bf16) {
      const std::vector<bf16> b = gather_pieces<bf16>(weights_->pieces(), local_n_, host, to_bf16);
      check(cudaMemcpyAsync(dev, b.data(), local_n_ * sizeof(bf16), cudaMemcpyHostToDevice, stream_), "state");
      check(cudaStreamSynchronize(stream_), "state");
    } else {
      const std::vector<float> f = gather_pieces<float>(weights_->pieces(), local_n_, host, identity);
      check(cudaMemcpyAsync(dev, f.data(), local_n_ * sizeof(float), cudaMemcpyHostToDevice, stream_), "state");
      check(cudaStreamSynchronize(stream_), "state");
    }
  }
}

void LlamaCuda::zero_grads() {
  weights_->wait_for_comm();
  if (weights_->sharded()) {
    // FSDP: reduced shards are added into the rank's gradient shard.
    check(cudaMemsetAsync(grads_, 0, local_n_ * sizeof(float), stream_), "zero grads");
    return;
  }
  // One GPU: the next backward overwrites every gradient instead (one pass
  // over the buffer saved), except the embedding's, which is a scatter-add
  // over the batch's tokens: zeroed just before it (an update may still
  // have to read this step's), or, tied, first written by the head's GEMM.
  grads_zero_ = true;
}

// Gradients that zero_grads() left to the next backward, made real zeros
// (an optimizer step or a download with no backward in between).
void LlamaCuda::materialize_zero_grads() {
  if (!grads_zero_) return;
  check(cudaMemsetAsync(grads_, 0, local_n_ * grad_elem_bytes(), stream_), "zero grads");
  grads_zero_ = false;
}

UnitView LlamaCuda::acquire(int unit) {
  UnitView v = weights_->acquire(unit);
  v.accumulate = !grads_zero_;  // only ever set on one GPU; FSDP's grad_begin adds into a zeroed slot
  return v;
}

UnitView LlamaCuda::gradients_of(int unit) {
  UnitView v = weights_->gradients_of(unit);
  if (!weights_->sharded()) v.accumulate = !grads_zero_;
  return v;
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

void LlamaCuda::forward_block(int l, const Block& a, int64_t B, bool recomputing, const UnitView& w) {
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
  linear_forward(l, 0, a.qkv, a.norm1, w.param(o.wqkv), N, cfg_.qkv_dim(), D);
  cuda::rope_apply(a.qkv, B, T_, cfg_.n_heads + cfg_.n_kv_heads, cfg_.qkv_dim(), cfg_.head_dim,
                   rope_cos_, rope_sin_, false, stream_);
  attention_forward(a, B);
  linear_forward(l, 1, proj_, a.att, w.param(o.wo), N, D, cfg_.q_dim());
  cuda::residual_rmsnorm_forward(a.resid_mid, a.norm2, a.rstd2, resid_[l], proj_,
                                 w.param(o.mlp_norm), N, D, eps, stream_);
  linear_forward(l, 2, a.gate_up, a.norm2, w.param(o.w_gate_up), N, 2 * F, D);
  cuda::swiglu_forward(a.act, a.gate_up, N, F, stream_);
  linear_forward(l, 3, proj_, a.act, w.param(o.w_down), N, D, F);  // added by the next fused norm
}

// Op-level recomputation: the second norm and SwiGLU's output, from the
// mid-block residual and gate|up the block kept (the first norm is redone
// later, in backward_block, into the buffer the second one frees).
void LlamaCuda::recompute_ops(int l, const Block& a, int64_t B, const UnitView& w) {
  const int64_t N = B * T_, D = cfg_.dim, F = cfg_.ffn_dim;
  const BlockOffsets& o = layout_.block(l);
  cuda::residual_rmsnorm_forward(nullptr, a.norm2, a.rstd2, a.resid_mid, nullptr, w.param(o.mlp_norm), N, D,
                                 static_cast<float>(cfg_.norm_eps), stream_);
  cuda::swiglu_forward(a.act, a.gate_up, N, F, stream_);
}

void LlamaCuda::backward_block(int l, const Block& a, int64_t B, const UnitView& w) {
  const int64_t N = B * T_, D = cfg_.dim, F = cfg_.ffn_dim;
  const BlockOffsets& o = layout_.block(l);
  linear_backward(l, 3, dact_, w.grad(o.w_down), dresid_, a.act, w.param(o.w_down), N, D, F);
  cuda::swiglu_backward(dgate_up_, dact_, a.gate_up, N, F, stream_);
  linear_backward(l, 2, dnorm_, w.grad(o.w_gate_up), dgate_up_, a.norm2, w.param(o.w_gate_up), N, 2 * F, D);
  cuda::rmsnorm_backward(dresid_, w.grad(o.mlp_norm), norm_scratch_, dnorm_, a.resid_mid, w.param(o.mlp_norm),
                         a.rstd2, N, D, true, stream_);
  linear_backward(l, 1, datt_, w.grad(o.wo), dresid_, a.att, w.param(o.wo), N, D, cfg_.q_dim());
  attention_backward(a, B);
  cuda::rope_apply(dqkv_, B, T_, cfg_.n_heads + cfg_.n_kv_heads, cfg_.qkv_dim(), cfg_.head_dim,
                   rope_cos_, rope_sin_, true, stream_);
  if (a.level != Recompute::none) {
    // norm1 shares its buffer with norm2 (written after it, in the forward
    // pass or its recomputation), which is no longer needed.
    cuda::residual_rmsnorm_forward(nullptr, a.norm1, a.rstd1, resid_[l], nullptr, w.param(o.attn_norm), N, D,
                                   static_cast<float>(cfg_.norm_eps), stream_);
  }
  linear_backward(l, 0, dnorm_, w.grad(o.wqkv), dqkv_, a.norm1, w.param(o.wqkv), N, cfg_.qkv_dim(), D);
  cuda::rmsnorm_backward(dresid_, w.grad(o.attn_norm), norm_scratch_, dnorm_, resid_[l], w.param(o.attn_norm),
                         a.rstd1, N, D, true, stream_);
}

// The classifier chunk by chunk: logits, their fp32 cross-entropy and z-loss
// gradients written back over them (bf16), then ∂L/∂norm_f and the head's
// gradient from them. With opts_.fp8_classifier the head's weight is cast to
// FP8 once (and once transposed for the input gradients), not per chunk.
void LlamaCuda::classifier(int64_t B, float z_weight, float grad_scale, bool backward,
                           float* logits_host, const UnitView& w) {
  const int64_t N = B * T_, D = cfg_.dim, V = cfg_.vocab_size;
  const bf16* head = w.param(layout_.lm_head());
  const bool fp8 = opts_.fp8_classifier;
  float* const head_amax = fp8 ? classifier_amax(fp8_slots_, static_cast<int>(cfg_.n_layers), 0) : nullptr;
  float* const chunk_amax = fp8 ? classifier_amax(fp8_slots_, static_cast<int>(cfg_.n_layers), 1) : nullptr;
  if (fp8) {
    fp8_cast_weight(head_amax, head, V, D);
    if (backward) fp8_cast_weight_t(head_amax, head, V, D);
  }
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows_) {
    const int64_t rows = std::min(chunk_rows_, N - r0);
    const bf16* in = norm_f_ + r0 * D;
    if (fp8)
      fp8_forward(chunk_amax, logits_, in, rows, V, D);
    else
      blas_->forward(logits_, in, head, rows, V, D);
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
    if (!backward) continue;
    const cuda::GradOut dw = w.grad(layout_.lm_head(), r0 == 0);
    if (fp8)
      fp8_backward(head_amax, chunk_amax, false, dnorm_ + r0 * D, dw, logits_, in, head, rows, V, D);
    else
      blas_->backward(dnorm_ + r0 * D, dw, logits_, in, head, rows, V, D);
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
  if (update_) update_->issue();  // the last step's AdamW, unit by unit, beside this forward pass

  // Units: 0 the embedding, 1 + l block l, L + 1 the head, asked for in the
  // same order on every rank; the next two blocks are fetched while this one
  // computes (a no-op on one GPU).
  const int L = static_cast<int>(cfg_.n_layers), head = L + 1;
  auto unit = [](int l) { return 1 + l; };
  UnitWeights& units = *weights_;
  units.prefetch(0);
  units.prefetch(unit(0));
  if (L > 1) units.prefetch(unit(1));
  const UnitView ew = acquire(0);
  mark(kEmbedFwd);
  cuda::embedding_forward(resid_[0], tokens_, ew.param(layout_.embed()), N, D, stream_);
  mark(kBlocksFwd);
  units.release(0);
  units.prefetch(head);
  for (int l = 0; l < L; ++l) {
    const UnitView w = acquire(unit(l));
    forward_block(l, blocks_[l], B, false, w);
    units.release(unit(l));
    if (l + 2 < L) units.prefetch(unit(l + 2));
  }
  mark(kHead);
  UnitView hw = acquire(head);
  if (backward) units.grad_begin(hw, head);
  cuda::residual_rmsnorm_forward(resid_[L], norm_f_, rstd_f_, blocks_[L - 1].resid_mid, proj_,
                                 hw.param(layout_.final_norm()), N, D, eps, stream_);
  classifier(B, z_weight, grad_scale, backward, logits_host, hw);
  if (update_) update_->forward_waited_for_all();
  if (!backward) {
    units.release(head);
    return;
  }

  // dnorm_ holds ∂L/∂norm_f from the classifier.
  cuda::rmsnorm_backward(dresid_, hw.grad(layout_.final_norm()), norm_scratch_, dnorm_, resid_[L],
                         hw.param(layout_.final_norm()), rstd_f_, N, D, false, stream_);
  units.release(head);
  units.grad_end(head);
  mark(kBlocksBwd);
  for (int l = L - 1; l >= 0; --l) {
    UnitView w = acquire(unit(l));  // the last two are still resident from the forward pass
    units.grad_begin(w, unit(l));
    const Block& a = blocks_[l];
    if (a.level == Recompute::full) forward_block(l, a, B, true, w);  // from its stored input
    if (a.level == Recompute::ops) recompute_ops(l, a, B, w);
    backward_block(l, a, B, w);
    units.release(unit(l));
    units.grad_end(unit(l));
    if (l - 2 >= 0) units.prefetch(unit(l - 2));
  }
  mark(kEmbedBwd);
  const UnitView eg = gradients_of(0);
  if (!units.sharded() && grads_zero_ && !cfg_.tie_embeddings) {
    check(cudaMemsetAsync(static_cast<uint8_t*>(grads_) + layout_.embed() * grad_elem_bytes(), 0,
                          layout_.get("embed").numel * grad_elem_bytes(), stream_), "zero embedding grads");
  }
  // Always added to: zero_grads() zeroed it, or (tied) the head's GEMM wrote it.
  cuda::embedding_backward(eg.grad(layout_.embed(), false), dresid_, bucket_pos_, bucket_start_, bucket_tok_,
                           n_buckets_, D, stream_);
  units.grad_end(0);
  mark(kOptimizer);
  grads_zero_ = false;
}

void LlamaCuda::set_phase_timing(bool on) {
  if (on && !phase_ev_[0])
    for (cudaEvent_t& e : phase_ev_) check(cudaEventCreate(&e), "event");
  phase_timing_ = on;
}

void LlamaCuda::mark(int boundary) {
  if (phase_timing_) check(cudaEventRecord(phase_ev_[boundary], stream_), "phase event");
}

std::vector<float> LlamaCuda::phase_ms() const {
  std::vector<float> ms(kPhases, 0.0f);
  if (!phase_ev_[0]) return ms;
  for (int p = 0; p < kPhases; ++p) check(cudaEventElapsedTime(&ms[p], phase_ev_[p], phase_ev_[p + 1]), "phase");
  return ms;
}

const char* LlamaCuda::phase_name(int p) {
  static const char* names[kPhases] = {"embedding fwd", "blocks fwd", "final norm + classifier fwd/bwd",
                                       "blocks bwd", "embedding bwd", "optimizer"};
  return p >= 0 && p < kPhases ? names[p] : "?";
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

// --- the optimizer -------------------------------------------------------------
// One GPU: Σg² (for the norm and the clip) right after the backward pass; the
// update itself is deferred into the next forward pass (model/deferred_update.h).
// FSDP: Σg² summed over the node, then the whole step (dist/fsdp_weights.h).

void LlamaCuda::flush_updates() {
  if (update_) update_->flush(stream_);
}

CudaStepStats LlamaCuda::optimizer_step(double lr, double beta1, double beta2, double eps,
                                        double weight_decay, double grad_clip, int64_t step,
                                        uint64_t seed) {
  const cuda::AdamWArgs args{static_cast<float>(lr),  static_cast<float>(beta1),
                             static_cast<float>(beta2), static_cast<float>(eps),
                             static_cast<float>(weight_decay), step,
                             static_cast<float>(grad_clip), seed};
  flush_updates();  // two steps with no forward pass between them
  materialize_zero_grads();
  CudaStepStats st;
  if (update_) {
    update_->begin(args, stream_);
    mark(kPhases);
    check(cudaMemcpyAsync(norm_host_, adam_->sum_squares_dev(), sizeof(float), cudaMemcpyDeviceToHost, stream_),
          "norm");
    st.loss = take_loss();  // synchronises the stream, so norm_host_ is ready too
    st.grad_norm = std::sqrt(static_cast<double>(*norm_host_));
    return st;
  }
  fsdp_->optimizer_step(*adam_, args);
  mark(kPhases);
  check(cudaMemcpyAsync(norm_host_, adam_->norm_dev(), sizeof(float), cudaMemcpyDeviceToHost, stream_), "norm");
  st.loss = take_loss();  // synchronises the stream, so norm_host_ is ready too
  st.grad_norm = *norm_host_;
  return st;
}

}  // namespace intellect
#endif
