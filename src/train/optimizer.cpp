#include "train/optimizer.h"

#include <cmath>

#include "kernels/adamw.h"

namespace intellect {

AdamW::AdamW(const ParamLayout& layout, const OptimConfig& cfg)
    : cfg_(cfg), m_(layout.total(), 0.0f), v_(layout.total(), 0.0f) {
  for (const ParamEntry& e : layout.entries()) {
    const bool decay = cfg.decay_norms_and_embeddings || (!e.is_norm && e.name != "embed");
    if (!ranges_.empty() && ranges_.back().decay == decay && ranges_.back().end == e.offset)
      ranges_.back().end = e.offset + e.numel;
    else
      ranges_.push_back({e.offset, e.offset + e.numel, decay});
  }
}

OptimStats AdamW::step(float* params, const float* grads, double lr) {
  OptimStats s;
  s.grad_norm = std::sqrt(cpu::sum_squares(grads, m_.size()));
  if (cfg_.grad_clip > 0.0 && s.grad_norm > cfg_.grad_clip)
    s.clip_scale = cfg_.grad_clip / (s.grad_norm + 1e-6);
  ++t_;
  for (const Range& r : ranges_) {
    cpu::AdamWStep a{static_cast<float>(lr),
                     static_cast<float>(cfg_.beta1),
                     static_cast<float>(cfg_.beta2),
                     static_cast<float>(cfg_.eps),
                     r.decay ? static_cast<float>(cfg_.weight_decay) : 0.0f,
                     t_,
                     static_cast<float>(s.clip_scale)};
    cpu::adamw_update(params + r.begin, grads + r.begin, m_.data() + r.begin, v_.data() + r.begin,
                      r.end - r.begin, a);
  }
  return s;
}

}  // namespace intellect
