#ifdef INTELLECT_HAVE_CUDA
#include "model/deferred_update.h"

#include <cuda_runtime.h>

#include "util/error.h"

namespace intellect {

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: deferred optimizer update: ", what, ": ", cudaGetErrorString(e));
}
}  // namespace

DeferredUpdate::DeferredUpdate(CudaAdamW& adam, const ParamLayout& layout, cuda::bf16* params, const void* grads,
                               bool grads_bf16)
    : adam_(adam), params_(params), grads_(grads), grads_bf16_(grads_bf16), units_(flat_units(layout)) {
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
  check(cudaEventCreateWithFlags(&grads_ready_, cudaEventDisableTiming), "event");
  unit_updated_.resize(units_.size());
  for (cudaEvent_t& e : unit_updated_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
}

DeferredUpdate::~DeferredUpdate() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (cudaEvent_t e : unit_updated_) cudaEventDestroy(e);
  if (grads_ready_) cudaEventDestroy(grads_ready_);
  if (stream_) cudaStreamDestroy(stream_);
}

void DeferredUpdate::begin(const cuda::AdamWArgs& args, cudaStream_t stream) {
  adam_.sum_squares(grads_, grads_bf16_, stream);
  check(cudaEventRecord(grads_ready_, stream), "gradients ready");
  args_ = args;
  pending_ = true;
  issued_ = false;
}

void DeferredUpdate::issue() {
  if (!pending_ || issued_) return;
  check(cudaStreamWaitEvent(stream_, grads_ready_, 0), "wait for the gradients");
  for (size_t u = 0; u < units_.size(); ++u) {
    adam_.update(params_, grads_, grads_bf16_, units_[u].range.begin, units_[u].range.end, args_, stream_);
    check(cudaEventRecord(unit_updated_[u], stream_), "unit updated");
  }
  issued_ = true;
}

void DeferredUpdate::wait_for_unit(int unit, cudaStream_t stream) {
  if (!pending_) return;
  issue();
  check(cudaStreamWaitEvent(stream, unit_updated_[unit], 0), "wait for a unit's update");
}

void DeferredUpdate::flush(cudaStream_t stream) {
  if (!pending_) return;
  wait_for_unit(static_cast<int>(units_.size()) - 1, stream);  // the update stream is in order: all of them
  pending_ = false;
}

}  // namespace intellect
#endif
