// AdamW over the flat parameter buffer: state m and v are flat buffers laid
// out like the parameters, and the update runs over contiguous ranges of equal
// weight decay (norm gains and the embedding take none unless configured).
#pragma once
#include <cstdint>
#include <vector>

#include "model/layout.h"
#include "train/config.h"

namespace intellect {

struct OptimStats {
  double grad_norm = 0.0;  // before clipping
  double clip_scale = 1.0;
};

class AdamW {
 public:
  AdamW(const ParamLayout& layout, const OptimConfig& cfg);

  // One update with learning rate `lr`; clips by global norm first.
  OptimStats step(float* params, const float* grads, double lr);

  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }

  struct Range {
    size_t begin, end;
    bool decay;
  };
  const std::vector<Range>& ranges() const { return ranges_; }

 private:
  OptimConfig cfg_;
  std::vector<Range> ranges_;
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

}  // namespace intellect
