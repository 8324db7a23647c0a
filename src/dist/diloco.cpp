#include "dist/diloco.h"

#include <xxhash.h>

#include <cmath>
#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace intellect {

// lr and μ are applied as float, as torch does for fp32 parameters, so a
// step here and torch's SGD on the same fp32 tensors round alike.
OuterOptimizer::OuterOptimizer(size_t n, double lr, double momentum, bool nesterov)
    : n_(n), lr_(static_cast<float>(lr)), mu_(static_cast<float>(momentum)), nesterov_(nesterov) {
  if (!(lr > 0.0) || !std::isfinite(lr)) fail("DiLoCo outer lr is ", lr, "; it must be a positive number (diloco.outer_lr)");
  if (!(momentum >= 0.0 && momentum < 1.0))
    fail("DiLoCo outer momentum is ", momentum, "; it must be in [0, 1) (diloco.outer_momentum)");
  if (nesterov && momentum == 0.0)
    fail("DiLoCo Nesterov momentum needs outer_momentum > 0 (torch refuses it too); set diloco.nesterov=false");
}

void OuterOptimizer::init(const float* params) {
  outer_.assign(params, params + n_);
  momentum_.assign(n_, 0.0f);
  steps_ = 0;
  initialized_ = true;
}

void OuterOptimizer::set_state(const float* params, const float* momentum) {
  outer_.assign(params, params + n_);
  momentum_.assign(momentum, momentum + n_);
  initialized_ = true;
}

void OuterOptimizer::swap_state(std::vector<float>& params, std::vector<float>& momentum) {
  if (params.size() != n_ || momentum.size() != n_)
    fail("OuterOptimizer::swap_state: ", params.size(), "/", momentum.size(), " values, the model has ", n_);
  outer_.swap(params);
  momentum_.swap(momentum);
  initialized_ = true;
}

void OuterOptimizer::release_state(std::vector<float>& params, std::vector<float>& momentum) {
  require_init("release_state");
  params = std::move(outer_);
  momentum = std::move(momentum_);
  outer_.clear();
  momentum_.clear();
  initialized_ = false;
}

void OuterOptimizer::require_init(const char* what) const {
  if (!initialized_) fail("OuterOptimizer::", what, " called before init(): give it the starting parameters first");
}

std::vector<float> OuterOptimizer::pseudo_gradient(const float* current) const {
  std::vector<float> g(n_);
  pseudo_gradient(current, g.data());
  return g;
}

void OuterOptimizer::pseudo_gradient(const float* current, float* out) const {
  require_init("pseudo_gradient");
  const float* o = outer_.data();
#pragma omp parallel for simd schedule(static) if (n_ > (1u << 16))
  for (size_t i = 0; i < n_; ++i) out[i] = o[i] - current[i];
}

void OuterOptimizer::step(const float* g, float* new_params_out) {
  check_finite(g);
  apply(g, new_params_out);
}

void OuterOptimizer::check_finite(const float* g) const {
  require_init("step");
  // Checked first: a half-applied step would leave the nodes disagreeing.
  // A pass over the whole model on the outer step's critical path: on every
  // core, and the first bad index looked up only when there is one.
  bool all_finite = true;
#pragma omp parallel for simd schedule(static) reduction(&& : all_finite) if (n_ > (1u << 16))
  for (size_t i = 0; i < n_; ++i) all_finite = all_finite && std::isfinite(g[i]);
  if (all_finite) return;
  for (size_t i = 0; i < n_; ++i)
    if (!std::isfinite(g[i]))
      fail("DiLoCo outer step: averaged pseudo-gradient value ", i, " is ", g[i],
           "; refusing to step (the outer parameters are unchanged)");
}

namespace {
// One value's outer step, SGD with momentum as torch.optim.SGD takes it
// (Nesterov or plain). apply, predict and the boundary's fused passes all
// go through it, so a prediction is the step's own arithmetic, bit for bit.
struct StepMath {
  float lr, mu;
  bool nesterov;
  float momentum(float v, float g) const { return mu * v + g; }  // torch: buf.mul_(μ).add_(g)
  float param(float p, float g, float v_new) const { return p - lr * (nesterov ? g + mu * v_new : v_new); }
  // Where a round starts while the step for δ is in flight: the step
  // scale·δ would give (predicted), or p − δ (the node's own progress).
  // scale 1 gives the bits of the step itself (1·δ is δ exactly).
  float start(float p, float v, float d, bool predicted, float scale) const {
    const float g = scale * d;
    return predicted ? param(p, g, momentum(v, g)) : p - d;
  }
};
}  // namespace

void OuterOptimizer::check_mask(const StepMask& mask) const {
  if (mask.block == 0 || mask.moves.size() != (n_ + mask.block - 1) / mask.block)
    fail("outer step: a block mask of ", mask.moves.size(), " blocks of ", mask.block, " values for ", n_,
         " parameters (internal error)");
}

namespace {
// f(lo, hi, moves) for each block [lo, hi) of a masked step, on every core.
template <typename F>
void over_blocks(const StepMask& mask, size_t n, F f) {
  const int64_t blocks = static_cast<int64_t>(mask.moves.size());
#pragma omp parallel for schedule(static) if (n > (1u << 16))
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t lo = static_cast<size_t>(b) * mask.block, hi = std::min(n, lo + mask.block);
    f(lo, hi, mask.moves[static_cast<size_t>(b)] != 0);
  }
}
}  // namespace

void OuterOptimizer::apply(const float* g, float* new_params_out, const StepMask* mask) {
  require_init("step");
  float* p = outer_.data();
  float* v = momentum_.data();
  const StepMath m{lr_, mu_, nesterov_};
  auto one = [&](size_t i) {
    const float gi = g[i];
    const float vi = m.momentum(v[i], gi);
    v[i] = vi;
    const float pi = m.param(p[i], gi, vi);
    p[i] = pi;
    if (new_params_out) new_params_out[i] = pi;  // in the same pass (it may alias g: g[i] was read)
  };
  if (!mask) {
#pragma omp parallel for simd schedule(static) if (n_ > (1u << 16))
    for (size_t i = 0; i < n_; ++i) one(i);
  } else {
    check_mask(*mask);
    over_blocks(*mask, n_, [&](size_t lo, size_t hi, bool moves) {
      if (moves) {
        for (size_t i = lo; i < hi; ++i) one(i);
      } else if (new_params_out) {
        std::copy(p + lo, p + hi, new_params_out + lo);
      }
    });
  }
  ++steps_;
}

void OuterOptimizer::predict(const float* g, float* out) const { start(g, out, true); }

void OuterOptimizer::start(const float* delta, float* out, bool predicted, float scale) const {
  require_init("predict");
  const float* p = outer_.data();
  const float* v = momentum_.data();
  const StepMath m{lr_, mu_, nesterov_};
#pragma omp parallel for simd schedule(static) if (n_ > (1u << 16))
  for (size_t i = 0; i < n_; ++i) out[i] = m.start(p[i], v[i], delta[i], predicted, scale);
}

float OuterOptimizer::StandinFit::scale() const {
  if (!(own_sq > 0.0)) return 1.0f;
  return static_cast<float>(std::clamp(dot / own_sq, 0.0, 1.0));
}

void OuterOptimizer::apply_after_start(const float* g, const float* delta_prev, float* start_out, bool predicted,
                                       float scale, StandinFit* fit, const StepMask* mask) {
  require_init("step");
  float* p = outer_.data();
  float* v = momentum_.data();
  const StepMath m{lr_, mu_, nesterov_};
  // One value: its start from the state before the step, then the step.
  auto one = [&](size_t i) {
    const float pi = p[i], vi = v[i], gi = g[i];
    start_out[i] = m.start(pi, vi, delta_prev[i], predicted, scale);
    const float vn = m.momentum(vi, gi);
    v[i] = vn;
    p[i] = m.param(pi, gi, vn);
  };
  if (mask) {
    if (fit) fail("outer step: a block mask with a fitted stand-in (internal error: rotations run without overlap)");
    check_mask(*mask);
    over_blocks(*mask, n_, [&](size_t lo, size_t hi, bool moves) {
      for (size_t i = lo; i < hi; ++i) {
        if (moves) one(i);
        else start_out[i] = m.start(p[i], v[i], delta_prev[i], predicted, scale);
      }
    });
  } else if (!fit) {
#pragma omp parallel for simd schedule(static) if (n_ > (1u << 16))
    for (size_t i = 0; i < n_; ++i) one(i);
  } else {
    // The fit's sums per fixed block, added in block order: the same bits
    // for any thread count (δ_prev is read before start_out, which may
    // alias it, is written).
    constexpr size_t kBlock = size_t{1} << 16;
    const size_t blocks = (n_ + kBlock - 1) / kBlock;
    std::vector<double> dots(blocks), sqs(blocks);
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (size_t b = 0; b < blocks; ++b) {
      const size_t lo = b * kBlock, hi = std::min(n_, lo + kBlock);
      double dot = 0.0, sq = 0.0;
      for (size_t i = lo; i < hi; ++i) {
        const double d = delta_prev[i];
        dot += d * g[i];
        sq += d * d;
        one(i);
      }
      dots[b] = dot;
      sqs[b] = sq;
    }
    fit->dot = fit->own_sq = 0.0;
    for (size_t b = 0; b < blocks; ++b) {
      fit->dot += dots[b];
      fit->own_sq += sqs[b];
    }
  }
  ++steps_;
}

void OuterOptimizer::next_start(const float* start, const float* weights, float* delta_out, float* start_out,
                                bool predicted, float scale) const {
  require_init("predict");
  const float* p = outer_.data();
  const float* v = momentum_.data();
  const StepMath m{lr_, mu_, nesterov_};
#pragma omp parallel for simd schedule(static) if (n_ > (1u << 16))
  for (size_t i = 0; i < n_; ++i) {
    const float d = start[i] - weights[i];
    delta_out[i] = d;
    start_out[i] = m.start(p[i], v[i], d, predicted, scale);
  }
}

uint64_t OuterOptimizer::params_hash() const {
  require_init("params_hash");
  // One XXH3 over a model of 277M values took 0.11-0.15 s, more than the
  // rest of an overlapped boundary it runs beside: blocks hash on every
  // core, and the blocks' hashes are hashed (one block: the plain hash).
  constexpr size_t kBlock = size_t{4} << 20;  // values (16 MiB)
  const size_t blocks = n_ == 0 ? 1 : (n_ + kBlock - 1) / kBlock;
  if (blocks == 1) return XXH3_64bits(outer_.data(), n_ * sizeof(float));
  std::vector<uint64_t> h(blocks);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < static_cast<int64_t>(blocks); ++b) {
    const size_t lo = static_cast<size_t>(b) * kBlock, len = std::min(kBlock, n_ - lo);
    h[b] = XXH3_64bits(outer_.data() + lo, len * sizeof(float));
  }
  return XXH3_64bits(h.data(), blocks * sizeof(uint64_t));
}

}  // namespace intellect
