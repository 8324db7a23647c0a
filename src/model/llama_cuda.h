// The Llama-3 model on the CUDA backend: bf16 parameters and activations,
// fp32 accumulation, fp32 or bf16 gradients, AdamW state in fp32 or bf16,
// optional fp32 master weights, per-block recomputation at three levels
// (model/memory_plan.h), planned from the GPU's free memory by default. Same
// flat layout and same op sequence as LlamaCpu, which is its oracle.
//
// All device memory is allocated in the constructor: a training step makes no
// allocations, and the only host synchronisation is reading the step's loss
// and gradient norm after the optimizer.
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cross_entropy.h"
#include "kernels/cuda_types.h"
#include "model/config.h"
#include "model/layout.h"
#include "model/cuda_adamw.h"
#include "model/memory_plan.h"
#include "model/unit_weights.h"

namespace intellect {

namespace cuda {
class Blas;
class CudnnAttention;
}  // namespace cuda
class DeferredUpdate;
class FsdpWeights;
class RankCollectives;

struct CudaOptions {
  bool master_weights = true;
  bool optim_state_bf16 = false;
  RecomputeSpec recompute;           // automatic, or one level per block
  size_t memory_limit = 0;           // plan as if the GPU had this many bytes (0 = all of it)
  bool grads_bf16 = false;           // the flat gradient buffer (one GPU only; FSDP shards are fp32)
  std::string attention = "auto";    // auto | cudnn | fallback
  bool doc_masking = false;          // forward_backward may get document segments (cuDNN's ragged plans are built)
  bool decay_norms_and_embeddings = false;
  // FSDP: this replica is rank `rank` of the `world` GPUs of one node and
  // keeps only its shard of the parameters, gradients and optimizer state
  // (ShardPlan). Each flat unit (embedding, block, head) is all-gathered just
  // ahead of use and its gradient reduce-scattered right after.
  int rank = 0, world = 1;
  RankCollectives* collectives = nullptr;  // this rank's (dist/collectives.h; world > 1)
  bool reduce_bf16 = false;   // reduce-scatter gradients in bf16 (half the bytes) instead of fp32
  // FP8 linear layers in the blocks (precision.matmul "fp8"): forward and
  // input-gradient GEMMs in FP8, each operand scaled per tensor as it is cast;
  // weight gradients in bf16 products (kernels/fp8.h) unless fp8_dw.
  bool fp8 = false;
  bool fp8_dw = false;  // precision.fp8_weight_gradients: the weight gradients' GEMMs in FP8 too
  bool fp8_classifier = false;  // precision.fp8_classifier: the classifier's products in FP8 too (needs fp8)
};

struct CudaStepStats {
  cpu::LossSums loss;
  double grad_norm = 0.0;
};

class LlamaCuda {
 public:
  // max_batch × seq_len is the largest micro-batch; buffers are sized for it.
  LlamaCuda(const ModelConfig& cfg, const CudaOptions& opts, int64_t max_batch, int64_t seq_len);
  ~LlamaCuda();
  LlamaCuda(const LlamaCuda&) = delete;
  LlamaCuda& operator=(const LlamaCuda&) = delete;

  const ParamLayout& layout() const { return layout_; }
  const MemoryPlan& memory_plan() const { return mem_plan_; }
  const std::string& gemm_tuning() const { return gemm_tuning_; }  // what Blas::tune found
  const ModelConfig& config() const { return cfg_; }
  std::string attention_impl() const;
  // cuDNN's engine configs and workspaces for attention (empty with the fallback kernel).
  std::string attention_plans() const;

  // Host buffers are whole flat fp32 buffers (layout().total() elements); a
  // shard (world > 1) reads and writes only the ranges it owns, so all ranks
  // can fill or read one host buffer side by side.
  void upload_params(const float* host);   // fp32 → bf16 params (and master)
  void download_params(float* host);       // current weights as fp32 (master when present)
  void download_grads(float* host);
  // AdamW m and v as fp32 (converted from bf16 when the state is bf16).
  void download_optimizer_state(float* m, float* v);
  void upload_optimizer_state(const float* m, const float* v);
  void zero_grads();

  // One micro-batch [B, T] of host tokens/targets (targets < 0 ignored).
  // Accumulates loss sums on the device and, with backward, gradients.
  // logits_host (nullable) receives fp32 logits [B*T, V] (synchronises).
  // cu_seqlens (host, n_segments + 1 entries, as Batch::cu_seqlens; needs
  // doc_masking) masks attention per document; nullptr: causal per row.
  void forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B, float z_weight,
                        float grad_scale, bool backward, float* logits_host = nullptr,
                        const int32_t* cu_seqlens = nullptr, int64_t n_segments = 0);

  // AdamW on the accumulated gradients; returns the loss sums since the last
  // call and the gradient norm (before clipping). Synchronises once.
  CudaStepStats optimizer_step(double lr, double beta1, double beta2, double eps,
                               double weight_decay, double grad_clip, int64_t step, uint64_t seed);
  // Loss sums since the last call, without an optimizer step (evaluation).
  cpu::LossSums take_loss();

  cudaStream_t stream() const { return stream_; }

  // Where a step's time goes (for bench_step): with timing on, events mark
  // the phases of each forward_backward and optimizer_step on the compute
  // stream; phase_ms() reads the last step's (after its synchronisation).
  enum Phase { kEmbedFwd, kBlocksFwd, kHead, kBlocksBwd, kEmbedBwd, kOptimizer, kPhases };
  void set_phase_timing(bool on);
  std::vector<float> phase_ms() const;  // kPhases entries: milliseconds of each phase
  static const char* phase_name(int p);
  size_t device_bytes() const { return allocated_; }

 private:
  // One block's activations. Depending on its recompute level some point
  // into shared buffers that are rewritten by the recomputation.
  struct Block {
    cuda::bf16 *norm1, *qkv, *att, *resid_mid, *norm2, *gate_up, *act;
    float *rstd1, *rstd2, *lse;
    Recompute level = Recompute::none;
  };
  template <class T>
  T* alloc(size_t count);
  void allocate_activations(int64_t max_batch, int64_t seq_len);
  void forward_block(int l, const Block& a, int64_t B, bool recomputing, const UnitView& w);
  void recompute_ops(int l, const Block& a, int64_t B, const UnitView& w);  // norm2 and SwiGLU's output
  void backward_block(int l, const Block& a, int64_t B, const UnitView& w);
  void classifier(int64_t B, float z_weight, float grad_scale, bool backward, float* logits_host,
                  const UnitView& w);
  // The unit's weights from the provider, its gradient overwriting or adding.
  UnitView acquire(int unit);
  UnitView gradients_of(int unit);
  // Outer-step copies of the flat parameters (upload_params/download_params):
  // chunk by chunk through two pinned staging buffers, so converting one
  // chunk on the host overlaps the copy of the other, with no allocation and
  // no page faults per outer step. `to_device` converts host -> staging
  // (elem_bytes per value); `from_device` staging -> host.
  void stage_to_device(void* dst, size_t elem_bytes, const float* host,
                       void (*convert)(const float* src, void* dst, size_t n));
  void stage_from_device(const void* src, size_t elem_bytes, float* host,
                         void (*convert)(const void* src, float* dst, size_t n));
  // When the caller's buffer is page-locked (cuda::pin_host_memory), the
  // copies skip staging: fp32 crosses by DMA straight into or out of it, and
  // bf16 weights without a master are converted on the GPU through
  // dma_scratch_ (kStageBytes of device memory, allocated at first use).
  void direct_to_device(const float* host, float* master);
  void direct_from_device(float* host, const float* master);
  void ensure_staging();
  void* stage_[2] = {nullptr, nullptr};
  float* dma_scratch_ = nullptr;
  cudaEvent_t stage_free_[2] = {nullptr, nullptr};
  void materialize_zero_grads();
  void flush_updates();  // the compute stream waits for any deferred update (one GPU)
  // The blocks' four linear layers, in bf16 or FP8 products (opts_.fp8):
  // `which` (0 qkv, 1 o, 2 gate|up, 3 down) names the weight whose absolute
  // maximum the forward pass keeps for the backward one.
  void linear_forward(int l, int which, cuda::bf16* out, const cuda::bf16* in, const cuda::bf16* w, int64_t M,
                      int64_t N, int64_t K);
  void linear_backward(int l, int which, cuda::bf16* din, const cuda::GradOut& dw, const cuda::bf16* dout,
                       const cuda::bf16* in, const cuda::bf16* w, int64_t M, int64_t N, int64_t K);
  // The FP8 pieces the blocks' layers and the classifier share: a weight
  // w[N,K] cast into w8_ by the amax measured into w_amax (or transposed
  // into wt8_ by the amax measured before), a product against the weight in
  // w8_, and the gradients against the one in wt8_ (cast first when
  // `cast_weight_t`).
  void fp8_cast_weight(float* w_amax, const cuda::bf16* w, int64_t N, int64_t K);
  void fp8_cast_weight_t(const float* w_amax, const cuda::bf16* w, int64_t N, int64_t K);
  void fp8_forward(float* in_amax, cuda::bf16* out, const cuda::bf16* in, int64_t M, int64_t N, int64_t K);
  void fp8_backward(const float* w_amax, const float* in_amax, bool cast_weight_t, cuda::bf16* din,
                    const cuda::GradOut& dw, const cuda::bf16* dout, const cuda::bf16* in, const cuda::bf16* w,
                    int64_t M, int64_t N, int64_t K);
  void allocate_fp8();
  void attention_forward(const Block& a, int64_t B);
  void attention_backward(const Block& a, int64_t B);
  void setup_documents();
  void stage_documents(const int32_t* cu_seqlens, int64_t n_segments, int64_t B);

  ModelConfig cfg_;
  CudaOptions opts_;
  ParamLayout layout_;
  // Where each unit's weights come from: the whole flat buffers (one GPU), or
  // FSDP's gathered shards (fsdp_ is then the same object, for its sharded
  // optimizer step).
  std::unique_ptr<UnitWeights> weights_;
  FsdpWeights* fsdp_ = nullptr;
  MemoryPlan mem_plan_;
  std::string gemm_tuning_;
  size_t local_n_ = 0;                   // elements in params_, grads_, m_, v_
  int64_t max_batch_, T_;
  int64_t chunk_rows_;  // classifier rows per chunk
  cudaStream_t stream_ = nullptr;
  std::vector<void*> allocations_;
  size_t allocated_ = 0;

  // parameters, gradients and the optimizer (flat)
  cuda::bf16* params_ = nullptr;
  std::unique_ptr<CudaAdamW> adam_;
  std::unique_ptr<DeferredUpdate> update_;  // one GPU: AdamW applied unit by unit beside the next forward pass
  void* grads_ = nullptr;          // fp32, or bf16 with opts_.grads_bf16
  bool grads_zero_ = false;        // zero_grads() was called and no backward has written since
  size_t grad_elem_bytes() const { return opts_.grads_bf16 ? 2 : 4; }
  double* loss_dev_ = nullptr;  // ce, z, n

  // activations
  std::vector<cuda::bf16*> resid_;  // L+1 residual streams
  std::vector<Block> blocks_;       // recomputed blocks share one Block
  Block shared_block_{};             // buffers that recomputed blocks share
  cuda::bf16 *norm_f_ = nullptr, *proj_ = nullptr, *logits_ = nullptr;
  float *rstd_f_ = nullptr, *row_ce_ = nullptr, *row_z_ = nullptr, *logits_f32_ = nullptr;
  float *rope_cos_ = nullptr, *rope_sin_ = nullptr;
  // backward scratch
  cuda::bf16 *dresid_ = nullptr, *dnorm_ = nullptr, *dqkv_ = nullptr, *datt_ = nullptr,
             *dgate_up_ = nullptr, *dact_ = nullptr;
  float* norm_scratch_ = nullptr;  // rmsnorm dw partials
  float* attn_scratch_ = nullptr;  // fallback attention's dO·O
  void* workspace_ = nullptr;      // cuBLAS + cuDNN
  size_t workspace_bytes_ = 0;

  // batch inputs: device, and pinned host staging
  int32_t *tokens_ = nullptr, *targets_ = nullptr, *bucket_pos_ = nullptr, *bucket_start_ = nullptr,
          *bucket_tok_ = nullptr;
  int32_t* staging_ = nullptr;  // pinned, 5 * max_batch*T + 1
  cudaEvent_t staging_free_ = nullptr;
  int64_t n_buckets_ = 0;
  double* loss_host_ = nullptr;  // pinned
  float* norm_host_ = nullptr;   // pinned

  void mark(int boundary);  // records phase boundary `boundary` (0..kPhases) when timing
  bool phase_timing_ = false;
  cudaEvent_t phase_ev_[kPhases + 1] = {};
  std::unique_ptr<cuda::Blas> blas_;
  // FP8 operands (opts_.fp8), cast just before each product on the compute
  // stream, which orders their reuse: the linear input, the output gradient,
  // the weight and the weight transposed; and the scales (model/memory_plan.h).
  uint8_t *x8_ = nullptr, *g8_ = nullptr, *w8_ = nullptr, *wt8_ = nullptr;
  float* fp8_slots_ = nullptr;
  std::unique_ptr<cuda::CudnnAttention> cudnn_attn_;
  int64_t cudnn_batch_ = -1;

  // Packed documents (opts_.doc_masking): the micro-batch's cu_seqlens, then cuDNN's
  // schedule of them, staged through pinned doc_host_ under staging_free_.
  bool cudnn_documents_ = false;     // cuDNN's ragged plans built (else the fallback kernel)
  int64_t doc_segments_ = 0;         // this micro-batch's segments; 0 = causal per row
  uint8_t* doc_dev_ = nullptr;       // cu_seqlens, then the schedule at doc_schedule_at_
  uint8_t* doc_host_ = nullptr;      // pinned
  size_t doc_schedule_at_ = 0;
};

}  // namespace intellect
#endif
