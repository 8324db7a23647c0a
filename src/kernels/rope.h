// Rotary position embedding in HuggingFace's layout: each head's vector is
// split into halves (x1, x2) and rotated as (x1 cos − x2 sin, x2 cos + x1 sin)
// ("rotate-half", not interleaved pairs). Frequencies follow HF, including
// Llama 3's frequency scaling.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace intellect {

// inv_freq[i] for i in [0, head_dim/2), with rope_scaling applied.
std::vector<float> rope_inv_freq(const ModelConfig& cfg);

// cos/sin tables [T, head_dim/2] for positions 0..T-1, computed as HF does
// (fp32 angle = position · inv_freq, then cos/sin).
struct RopeTable {
  int64_t T = 0, half = 0;
  std::vector<float> cos, sin;
};
RopeTable rope_table(const ModelConfig& cfg, int64_t T);

}  // namespace intellect

namespace intellect::cpu {

// Rotates, in place, `n_heads` head vectors of size 2*half starting at `x` in
// each of B*T rows of `row_stride` floats; row b*T+t has position t.
// inverse=true applies the transpose rotation: the backward pass.
void rope_apply(float* x, int64_t B, int64_t T, int64_t n_heads, int64_t row_stride,
                const RopeTable& table, bool inverse);

}  // namespace intellect::cpu

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// In place on bf16 rows, with device tables cos/sin [T, head_dim/2] (fp32),
// the same layout as cpu::rope_apply.
void rope_apply(bf16* x, int64_t B, int64_t T, int64_t n_heads, int64_t row_stride,
                int64_t head_dim, const float* cos, const float* sin, bool inverse,
                cudaStream_t stream);
}  // namespace intellect::cuda
#endif
