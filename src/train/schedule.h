// Learning-rate schedules: linear warmup, then constant, cosine, or
// warmup-stable-decay with INTELLECT-1's square-root decay
// (factor 1 − √((step − stable_end) / decay_steps)).
#pragma once
#include <cstdint>

#include "train/config.h"

namespace intellect {

// Learning rate for 0-based optimizer step `step` of `total_steps`.
double lr_at(const OptimConfig& optim, int64_t step, int64_t total_steps);

}  // namespace intellect
