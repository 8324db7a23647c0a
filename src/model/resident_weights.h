// UnitWeights on one GPU: every weight and gradient stays in the model's flat
// buffers, so a unit is readable as soon as its deferred optimizer update
// (model/deferred_update.h) has been applied, and gradients go straight into
// the flat gradient buffer.
//
// Thread: the model's (the training thread); see model/unit_weights.h.
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include "model/deferred_update.h"
#include "model/unit_weights.h"

namespace intellect {

class ResidentWeights final : public UnitWeights {
 public:
  // The flat buffers (layout.total() elements each) and the update the
  // compute stream `stream` must wait for, unit by unit.
  ResidentWeights(size_t total, const cuda::bf16* params, void* grads, bool grads_bf16, DeferredUpdate& update,
                  cudaStream_t stream);

  const std::vector<ShardPiece>& pieces() const override { return pieces_; }
  size_t local_elements() const override { return pieces_.front().len; }
  bool sharded() const override { return false; }

  void prefetch(int) override {}
  UnitView acquire(int unit) override;
  void release(int) override {}
  void grad_begin(UnitView&, int) override {}
  void grad_end(int) override {}
  UnitView gradients_of(int) override { return whole(); }
  void wait_for_comm() override {}
  void params_changed() override {}

 private:
  UnitView whole() const;
  std::vector<ShardPiece> pieces_;
  const cuda::bf16* params_;
  void* grads_;
  bool grads_bf16_;
  DeferredUpdate& update_;
  cudaStream_t stream_;
};

}  // namespace intellect
#endif
