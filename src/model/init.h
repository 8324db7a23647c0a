// Parameter initialisation into the flat buffer.
#pragma once
#include <cstdint>

#include "model/config.h"
#include "model/layout.h"

namespace intellect {

// Norm gains 1; matrices N(0, init_std²), with the two projections that write
// into the residual stream (wo, w_down) scaled by 1/√(2·n_layers) so the
// stream's variance does not grow with depth. Deterministic in `seed`.
void init_params(float* params, const ParamLayout& layout, const ModelConfig& cfg, uint64_t seed);

}  // namespace intellect
