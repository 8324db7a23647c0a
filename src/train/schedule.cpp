#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace intellect {

double lr_at(const OptimConfig& o, int64_t step, int64_t total) {
  const ScheduleConfig& s = o.schedule;
  if (step < s.warmup_steps)  // step 0 already gets lr/warmup, not 0
    return o.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  const double floor = s.min_lr_ratio;
  if (s.type == "constant") return o.lr;
  if (s.type == "cosine") {
    const double span = static_cast<double>(std::max<int64_t>(1, total - s.warmup_steps));
    const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / span);
    return o.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  // wsd-sqrt / wsd-linear
  const int64_t stable_end = total - s.decay_steps;
  if (step < stable_end || s.decay_steps == 0) return o.lr;
  const double progress =
      std::min(1.0, static_cast<double>(step - stable_end) / static_cast<double>(s.decay_steps));
  const double factor = s.type == "wsd-sqrt" ? 1.0 - std::sqrt(progress) : 1.0 - progress;
  return o.lr * (floor + (1.0 - floor) * factor);
}

}  // namespace intellect
