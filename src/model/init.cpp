#include "model/init.h"

#include <cmath>

#include "util/rng.h"

namespace intellect {

void init_params(float* params, const ParamLayout& layout, const ModelConfig& cfg, uint64_t seed) {
  const double resid_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(cfg.n_layers));
  for (const ParamEntry& e : layout.entries()) {
    float* p = params + e.offset;
    if (e.is_norm) {
      for (size_t i = 0; i < e.numel; ++i) p[i] = 1.0f;
      continue;
    }
    const bool resid = e.name.ends_with(".wo") || e.name.ends_with(".w_down");
    const double std = cfg.init_std * (resid ? resid_scale : 1.0);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < e.numel; ++i)
      p[i] = static_cast<float>(std * normal01(seed, e.offset + i));
  }
}

}  // namespace intellect
