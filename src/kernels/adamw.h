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
