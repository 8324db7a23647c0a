#ifdef INTELLECT_HAVE_CUDA
#include "model/cuda_adamw.h"

#include <cuda_runtime.h>

#include "util/error.h"

namespace intellect {

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: AdamW state: ", what, ": ", cudaGetErrorString(e));
}
}  // namespace

CudaAdamW::CudaAdamW(size_t n, bool master_weights, bool state_bf16, const std::vector<int64_t>& decay_bounds,
                     const std::vector<uint8_t>& decay_flags, const Alloc& alloc, cudaStream_t stream)
    : n_(n), state_bf16_(state_bf16) {
  const size_t state_bytes = n * (state_bf16 ? 2 : 4);
  if (master_weights) master_ = static_cast<float*>(alloc(n * sizeof(float)));
  m_ = alloc(state_bytes);
  v_ = alloc(state_bytes);
  if (state_bytes) {
    check(cudaMemsetAsync(m_, 0, state_bytes, stream), "zero m");
    check(cudaMemsetAsync(v_, 0, state_bytes, stream), "zero v");
  }
  n_decay_ranges_ = static_cast<int>(decay_flags.size());
  decay_bounds_ = static_cast<int64_t*>(alloc(decay_bounds.size() * sizeof(int64_t)));
  decay_flags_ = static_cast<uint8_t*>(alloc(decay_flags.size()));
  // On the model's stream, not with cudaMemcpy: from pageable memory that
  // returns before the DMA lands, and the legacy stream it uses does not order
  // a non-blocking stream. The host vectors may go at once: a pageable copy
  // has staged them when the call returns.
  check(cudaMemcpyAsync(decay_bounds_, decay_bounds.data(), decay_bounds.size() * 8, cudaMemcpyHostToDevice, stream),
        "bounds");
  check(cudaMemcpyAsync(decay_flags_, decay_flags.data(), decay_flags.size(), cudaMemcpyHostToDevice, stream),
        "flags");
  scratch_ = static_cast<float*>(alloc(cuda::adamw_scratch_floats() * sizeof(float)));
  norm_ = static_cast<float*>(alloc(sizeof(float)));
  sum_squares_ = static_cast<float*>(alloc(sizeof(float)));
}

void CudaAdamW::sum_squares(const void* grads, bool grads_bf16, cudaStream_t stream) {
  cuda::grad_sum_squares(grads, grads_bf16, static_cast<int64_t>(n_), sum_squares_, scratch_, stream);
}

void CudaAdamW::step(cuda::bf16* params, const void* grads, bool grads_bf16, const cuda::AdamWArgs& args,
                     cudaStream_t stream, const float* global_ss) {
  const cuda::DecayRanges ranges{decay_bounds_, decay_flags_, n_decay_ranges_};
  cuda::adamw_step(params, master_, grads, grads_bf16, m_, v_, state_bf16_, static_cast<int64_t>(n_), ranges, args,
                   norm_, scratch_, stream, global_ss);
}

void CudaAdamW::update(cuda::bf16* params, const void* grads, bool grads_bf16, size_t begin, size_t end,
                       const cuda::AdamWArgs& args, cudaStream_t stream) {
  const cuda::DecayRanges ranges{decay_bounds_, decay_flags_, n_decay_ranges_};
  cuda::adamw_update_range(params, master_, grads, grads_bf16, m_, v_, state_bf16_, static_cast<int64_t>(begin),
                           static_cast<int64_t>(end), ranges, args, sum_squares_, stream);
}

}  // namespace intellect
#endif
