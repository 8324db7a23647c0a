// The one-GPU AdamW step, applied late: Σg² right after the backward pass
// (the clip needs the whole norm), then each flat unit's update queued on a
// stream of its own at the start of the next forward pass, and the compute
// stream waits for a unit's update only just before it reads that unit's
// weights. So the memory-bound update runs beside the compute-bound blocks.
// Anything else that reads or replaces the weights or the optimizer state
// calls flush() first.
//
// Thread: the model's (the training thread); everything is queued on CUDA
// streams. It touches the parameters, gradients and AdamW state it is given,
// and nothing of the model's activations.
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include <vector>

#include "kernels/adamw.h"
#include "kernels/cuda_types.h"
#include "model/cuda_adamw.h"
#include "model/layout.h"

namespace intellect {

class DeferredUpdate {
 public:
  DeferredUpdate(CudaAdamW& adam, const ParamLayout& layout, cuda::bf16* params, const void* grads,
                 bool grads_bf16);
  ~DeferredUpdate();
  DeferredUpdate(const DeferredUpdate&) = delete;
  DeferredUpdate& operator=(const DeferredUpdate&) = delete;

  // After the backward pass, on `stream`: Σg² into adam.sum_squares_dev(),
  // and the step with `args` left pending.
  void begin(const cuda::AdamWArgs& args, cudaStream_t stream);
  // Queue every unit's pending update (once per step), on the update stream.
  void issue();
  // `stream` waits until `unit`'s weights are updated (queues the updates first).
  void wait_for_unit(int unit, cudaStream_t stream);
  // `stream` waits for the whole pending update; nothing is pending after.
  void flush(cudaStream_t stream);
  // The forward pass waited for every unit: nothing is pending any more.
  void forward_waited_for_all() { pending_ = false; }

 private:
  CudaAdamW& adam_;
  cuda::bf16* params_;
  const void* grads_;
  bool grads_bf16_;
  std::vector<FlatUnit> units_;  // embedding, blocks, head: the order the forward pass reads them
  std::vector<cudaEvent_t> unit_updated_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t grads_ready_ = nullptr;
  cuda::AdamWArgs args_{};
  bool pending_ = false, issued_ = false;
};

}  // namespace intellect
#endif
