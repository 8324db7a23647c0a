// UnitWeights under FSDP: this GPU is rank `rank` of the `world` GPUs of one
// node and keeps only its shard of every flat unit's parameters, gradients
// and optimizer state (ShardPlan). Each unit is all-gathered into a slot just
// ahead of use and its gradient reduce-scattered right after; the sharded
// AdamW step sums Σg² over the node first, for the clip.
//
// Two streams: the model's compute stream and this class's communication
// stream. Events order them: a gather into a slot waits until compute has
// released the slot's previous unit; compute waits until the gather is
// ready. Everything is issued in the same order on every rank, as NCCL
// requires. Slots: two for blocks (one in use, one being gathered), one for
// the embedding or the head.
//
// Thread: the model's (the training thread); every collective (NCCL, or
// dist/shared_gpu_group.h in tests) is queued on the communication stream. It owns the gather and gradient slots and
// touches the model's local parameter and gradient shards (bind()).
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include <functional>
#include <memory>

#include "dist/collectives.h"
#include "dist/shard_plan.h"
#include "kernels/adamw.h"
#include "model/cuda_adamw.h"
#include "model/unit_weights.h"

namespace intellect {

class FsdpWeights final : public UnitWeights {
 public:
  using Alloc = std::function<void*(size_t bytes)>;  // device memory, zeroed, owned by the caller
  FsdpWeights(const ParamLayout& layout, int rank, int world, RankCollectives* collectives, bool reduce_bf16,
              cudaStream_t compute, const Alloc& alloc);
  ~FsdpWeights() override;
  FsdpWeights(const FsdpWeights&) = delete;
  FsdpWeights& operator=(const FsdpWeights&) = delete;

  // The model's local shards (local_elements() each): bf16 parameters, fp32 gradients.
  void bind(cuda::bf16* params, float* grads);

  const std::vector<ShardPiece>& pieces() const override { return pieces_; }
  size_t local_elements() const override { return plan_.local_elements(); }
  bool sharded() const override { return true; }

  void prefetch(int unit) override;
  UnitView acquire(int unit) override;
  void release(int unit) override;
  void grad_begin(UnitView& view, int unit) override;
  void grad_end(int unit) override;
  UnitView gradients_of(int unit) override;
  void wait_for_comm() override;
  void params_changed() override;

  // AdamW over this shard, clipped by the norm over the node's shards (Σg²
  // all-reduced first); adam.norm_dev() gets that norm.
  void optimizer_step(CudaAdamW& adam, const cuda::AdamWArgs& args);

 private:
  static constexpr int kBigSlot = 2;
  struct Slot {
    void* buf = nullptr;
    cudaEvent_t ready = nullptr, free = nullptr;
    int unit = -1;  // which unit the buffer holds (host's view, in issue order)
  };
  int slot_of(int unit) const;

  ShardPlan plan_;
  std::vector<ShardPiece> pieces_;
  int world_;
  RankCollectives* comm_;
  bool reduce_bf16_;
  cudaStream_t compute_, comm_stream_ = nullptr;
  cudaEvent_t comm_done_ = nullptr, compute_done_ = nullptr;
  Slot slots_[3], grad_slots_[3];
  void* rs_out_ = nullptr;            // one reduced shard (fp32 or bf16)
  cuda::bf16* rs_in_bf16_ = nullptr;  // a unit's gradient rounded to bf16
  cuda::bf16* params_ = nullptr;
  float* grads_ = nullptr;
};

}  // namespace intellect
#endif
