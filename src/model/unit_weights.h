// Where the CUDA model gets each flat unit's weights and puts its gradient.
//
// The model (LlamaCuda) runs its ops unit by unit (embedding, each block,
// the head: flat_units()) and asks a UnitWeights for every unit it reads,
// in the same order on every rank:
//
//   prefetch(u)          a hint: u is needed soon (start fetching it)
//   acquire(u) -> view   the compute stream waits until u's weights are readable
//   release(u)           the compute stream has queued its last read of u
//   grad_begin(view, u)  where u's gradient goes (may redirect the view)
//   grad_end(u)          the compute stream has queued its last write of it
//
// Two providers: ResidentWeights (model/resident_weights.h), one GPU holding
// every weight, whose acquire waits only for the unit's deferred optimizer
// update; and FsdpWeights (dist/fsdp_weights.h), which all-gathers each unit
// from the node's shards ahead of use and reduce-scatters its gradient right
// after. The model never sees which one it has: sharding lives in dist/.
//
// Thread: the training thread that owns the model calls everything here;
// all work is queued on CUDA streams, nothing blocks the host.
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include <cstddef>
#include <vector>

#include "kernels/cuda_types.h"
#include "model/layout.h"

namespace intellect {

// One unit's weights and gradient as the model indexes them: by flat offsets
// from ParamLayout, through `base` (0 for the whole flat buffers, the unit's
// first offset for a gathered copy of the unit alone). `accumulate` is false
// only for the first backward after zero_grads() on one GPU: its gradients
// overwrite instead of adding to zeros.
struct UnitView {
  const cuda::bf16* p = nullptr;
  void* g = nullptr;
  bool g_bf16 = false;
  bool accumulate = true;
  size_t base = 0;
  const cuda::bf16* param(size_t off) const { return p + (off - base); }
  cuda::GradOut grad(size_t off, bool first_write = true) const {
    const size_t i = off - base;
    return {g_bf16 ? static_cast<void*>(static_cast<cuda::bf16*>(g) + i)
                   : static_cast<void*>(static_cast<float*>(g) + i),
            g_bf16, accumulate || !first_write};
  }
};

class UnitWeights {
 public:
  virtual ~UnitWeights() = default;

  // What this replica keeps of the flat buffer, and the length of its local
  // parameter, gradient and optimizer buffers (padding included).
  virtual const std::vector<ShardPiece>& pieces() const = 0;
  virtual size_t local_elements() const = 0;
  virtual bool sharded() const = 0;

  virtual void prefetch(int unit) = 0;
  virtual UnitView acquire(int unit) = 0;
  virtual void release(int unit) = 0;
  virtual void grad_begin(UnitView& view, int unit) = 0;
  virtual void grad_end(int unit) = 0;
  // The unit's gradient destination alone, for ops that write a gradient
  // without reading the unit's weights (the embedding's scatter-add).
  virtual UnitView gradients_of(int unit) = 0;

  // Outside the unit-by-unit flow: the compute stream waits for every copy
  // and reduction in flight (before the flat buffers are read or replaced),
  // and the local parameters changed (copies made from them are stale).
  virtual void wait_for_comm() = 0;
  virtual void params_changed() = 0;
};

}  // namespace intellect
#endif
