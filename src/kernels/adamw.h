// AdamW over a flat range of the parameter buffer, with the gradient-clipping
// factor folded in, and the global gradient norm that clipping needs.
#pragma once
#include <cstddef>
#include <cstdint>

namespace intellect::cpu {

struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;      // 1-based, for bias correction
  float grad_scale;  // applied to the gradient first: the clipping factor
};

// PyTorch's AdamW: p ← p·(1 − lr·wd); m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
// p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)
void adamw_update(float* p, const float* g, float* m, float* v, size_t n, const AdamWStep& s);

// Σ g², in double, reduced in fixed chunks in a fixed order: deterministic.
double sum_squares(const float* g, size_t n);

}  // namespace intellect::cpu

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// Parameter ranges with and without weight decay, as flat [begin, end) pairs.
struct DecayRanges {
  const int64_t* bounds;  // device: n+1 increasing offsets, bounds[0] = 0, bounds[n] = total
  const uint8_t* decay;   // device: n flags
  int n;
};
struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;           // 1-based
  float max_norm;         // clip the global gradient norm to this; 0 = no clipping
  uint64_t seed;          // for stochastic rounding when there are no master weights
};
// One cooperative launch: global gradient norm (fixed-order reduction), clip
// factor, then the AdamW update of every element. `master` (fp32) is the
// weight that is updated when present, and params gets its bf16 rounding;
// without it, params is updated in fp32 and stochastically rounded back.
// m/v are fp32 or bf16 (state_bf16). norm_out (device) gets the norm before
// clipping. `scratch` holds adamw_scratch_floats() floats.
// A sharded optimizer (FSDP) passes sum_squares_in (device): Σg² over every
// shard, all-reduced; the kernel then takes the norm from it instead.
// grads are fp32 or bf16 (grads_bf16).
void adamw_step(bf16* params, float* master, const void* grads, bool grads_bf16, void* m, void* v,
                bool state_bf16,
                int64_t n, const DecayRanges& ranges, const AdamWArgs& args, float* norm_out,
                float* scratch, cudaStream_t stream, const float* sum_squares_in = nullptr);
// Σg² over n elements into *out (device), in a fixed order. `scratch` holds
// adamw_scratch_floats() floats.
void grad_sum_squares(const void* grads, bool grads_bf16, int64_t n, float* out, float* scratch,
                      cudaStream_t stream);
// The update of adamw_step alone, over elements [begin, end) of the buffers,
// its clip factor derived from *sum_squares (device): Σg² of the whole step
// (grad_sum_squares, all-reduced when sharded). A step applied range by range
// equals the step applied at once. No host synchronisation.
void adamw_update_range(bf16* params, float* master, const void* grads, bool grads_bf16, void* m, void* v,
                        bool state_bf16, int64_t begin, int64_t end, const DecayRanges& ranges,
                        const AdamWArgs& args, const float* sum_squares, cudaStream_t stream);
size_t adamw_scratch_floats();
}  // namespace intellect::cuda
#endif
