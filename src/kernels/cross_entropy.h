// The classifier loss: softmax cross-entropy with INTELLECT-1's max-z-loss
// (z_weight · max(logits)², from Baichuan 2), forward and backward in one pass.
//
// Targets < 0 are ignored. Losses are returned as sums over the rows with a
// valid target; the caller divides by the number of targets in the step and
// passes the same divisor as grad_scale = 1/n, so dlogits is the gradient of
//   mean_ce + z_weight · mean(max_logit²).
#pragma once
#include <cstdint>

namespace intellect::cpu {

struct LossSums {
  double ce = 0.0;      // Σ −log softmax(logits)[target]
  double z = 0.0;       // Σ max(logits)²
  int64_t n_valid = 0;  // rows with a target
};

// dlogits may be null (forward only) or alias logits (overwritten in place).
LossSums cross_entropy(const float* logits, float* dlogits, const int32_t* targets, int64_t N,
                       int64_t V, float z_weight, float grad_scale);

}  // namespace intellect::cpu
