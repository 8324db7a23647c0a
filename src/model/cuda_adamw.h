// AdamW's state on the GPU for one replica, or one FSDP shard: m and v (fp32
// or bf16), the optional fp32 master weights, the weight-decay ranges, and
// the step's Σg². The model owns one and drives it on its streams; it never
// touches the model's activations, and the model reaches the state only
// through it.
//
// A step is applied either at once (adamw_step: one cooperative launch with
// the norm, as the FSDP path does after its all-reduce) or in two parts:
// sum_squares() right after the backward pass, then update() per flat range,
// each just before that range's weights are next read, on a stream of its
// own, so the memory-bound update overlaps the next forward pass.
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/cuda_types.h"

namespace intellect {

class CudaAdamW {
 public:
  using Alloc = std::function<void*(size_t bytes)>;
  // n elements; decay_bounds/flags as local_decay_ranges() gives them.
  CudaAdamW(size_t n, bool master_weights, bool state_bf16, const std::vector<int64_t>& decay_bounds,
            const std::vector<uint8_t>& decay_flags, const Alloc& alloc, cudaStream_t stream);

  size_t size() const { return n_; }
  bool state_bf16() const { return state_bf16_; }
  float* master() const { return master_; }  // null without master weights
  void* m() const { return m_; }
  void* v() const { return v_; }

  // Σg² of the whole gradient buffer into sum_squares() (device), fixed order.
  void sum_squares(const void* grads, bool grads_bf16, cudaStream_t stream);
  float* sum_squares_dev() const { return sum_squares_; }
  // The whole step in one launch; norm() gets the gradient norm. With
  // global_ss (device), the clip uses that Σg² (all shards) instead.
  void step(cuda::bf16* params, const void* grads, bool grads_bf16, const cuda::AdamWArgs& args,
            cudaStream_t stream, const float* global_ss = nullptr);
  float* norm_dev() const { return norm_; }
  // The step's update of elements [begin, end), clipped by sum_squares().
  void update(cuda::bf16* params, const void* grads, bool grads_bf16, size_t begin, size_t end,
              const cuda::AdamWArgs& args, cudaStream_t stream);

 private:
  size_t n_;
  bool state_bf16_;
  float* master_ = nullptr;
  void *m_ = nullptr, *v_ = nullptr;
  int64_t* decay_bounds_ = nullptr;
  uint8_t* decay_flags_ = nullptr;
  int n_decay_ranges_ = 0;
  float *scratch_ = nullptr, *norm_ = nullptr, *sum_squares_ = nullptr;
};

}  // namespace intellect
#endif
