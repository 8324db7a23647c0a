#ifdef INTELLECT_HAVE_CUDA
#include "model/resident_weights.h"

namespace intellect {

ResidentWeights::ResidentWeights(size_t total, const cuda::bf16* params, void* grads, bool grads_bf16,
                                 DeferredUpdate& update, cudaStream_t stream)
    : pieces_{ShardPiece{0, 0, total}}, params_(params), grads_(grads), grads_bf16_(grads_bf16), update_(update),
      stream_(stream) {}

UnitView ResidentWeights::whole() const {
  UnitView v;
  v.p = params_;
  v.g = grads_;
  v.g_bf16 = grads_bf16_;
  return v;
}

UnitView ResidentWeights::acquire(int unit) {
  update_.wait_for_unit(unit, stream_);
  return whole();
}

}  // namespace intellect
#endif
