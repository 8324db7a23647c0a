// DiLoCo's outer optimizer: SGD with (Nesterov) momentum applied to the
// averaged pseudo-gradient, exactly as torch.optim.SGD(momentum=μ,
// nesterov=...) with dampening 0 and no weight decay treats a gradient:
//   v = μ·v + g;  update = g + μ·v (Nesterov) or v;  outer −= lr·update.
// (torch's first step sets v = g, which is the same as v = μ·0 + g.)
// Outer parameters and momentum live in fp32 host memory, in the flat
// parameter layout; the new outer parameters become every node's inner
// parameters for the next H inner steps.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace intellect {

// Which fixed blocks of the flat vector an outer step moves: a block
// rotation's round (block_rotation.h) averages only its selected blocks, and
// the others' outer parameters and momentum wait, unchanged, for their own
// round. Without it a zero pseudo-gradient would still decay their momentum
// and move them by it (Nesterov coasting on a block nobody averaged). With
// momentum 0 the two are the same bits: p − lr·0 = p, v = 0.
struct StepMask {
  std::span<const uint8_t> moves;  // per block: nonzero when this step moves it
  size_t block = 0;                // values per block (the last may be shorter)
};

class OuterOptimizer {
 public:
  OuterOptimizer(size_t n, double lr, double momentum, bool nesterov);

  // Sets the outer parameters (the inner parameters at the start of the
  // first outer step) and zeroes the momentum.
  void init(const float* params);
  // Restores a checkpointed state.
  void set_state(const float* params, const float* momentum);
  // Exchanges the state with two caller's vectors of size() values (no
  // copy): the caller gets the old state, this optimizer holds theirs.
  void swap_state(std::vector<float>& params, std::vector<float>& momentum);
  // Moves the state out (no copy); the optimizer needs init() or a state again.
  void release_state(std::vector<float>& params, std::vector<float>& momentum);

  // outer − current: what the inner steps would subtract, as a gradient.
  std::vector<float> pseudo_gradient(const float* current) const;
  void pseudo_gradient(const float* current, float* out) const;

  // One outer step with the averaged pseudo-gradient; writes the new outer
  // parameters to new_params_out (may be null). Refuses a non-finite
  // pseudo-gradient before changing any state.
  void step(const float* averaged_pseudo_gradient, float* new_params_out);
  // The two halves of step(), for a caller with something to do in between:
  // the refusal of a non-finite value (no state changed), then the update.
  // new_params_out may alias the pseudo-gradient (it is read first).
  void check_finite(const float* averaged_pseudo_gradient) const;
  // With a mask, only its moving blocks step; the others keep parameters
  // and momentum (new_params_out gets their parameters as they are).
  void apply(const float* averaged_pseudo_gradient, float* new_params_out, const StepMask* mask = nullptr);
  // The outer parameters a step with g would give, without taking it (no
  // state changes; the same arithmetic as apply). out may alias g. DiLoCo
  // with overlap starts a round from the step its own pseudo-gradient
  // would give, until the average arrives.
  void predict(const float* g, float* out) const;
  // start(δ) below, alone: predict(scale·δ) when `predicted`, else outer − δ.
  void start(const float* delta, float* out, bool predicted, float scale = 1.0f) const;

  // How well a node's own pseudo-gradient δ predicted the average g of the
  // same round: the least-squares scale c = ⟨g, δ⟩ / ⟨δ, δ⟩, clamped to
  // [0, 1] (1 when δ = 0). Eager with a fitted stand-in starts the next
  // round from the step c·δ would give: nodes whose δs mostly disagree
  // (noise) get c near 1/N, nodes that agree c near 1. Summed over fixed
  // blocks in a fixed order, so c does not depend on the thread count.
  struct StandinFit {
    double dot = 0.0, own_sq = 0.0;
    float scale() const;
  };

  // The overlapped boundary's two passes, each one sweep over its arrays
  // instead of one per operation (the boundary holds the training thread;
  // the results are bit for bit those of the separate calls). start(δ) is
  // where a round starts while its average is in flight: predict(scale·δ)
  // when `predicted` (eager), else outer − δ (the node's own progress, delayed).
  //  - apply_after_start: start_out = start(δ_prev) from the state before
  //    this step, then apply(g) with no new_params_out. start_out may alias
  //    delta_prev; g may alias neither. With `fit`, also the StandinFit of
  //    δ_prev against g (its average), in the same pass.
  //  - next_start: δ_out = start − weights, then start_out = start(δ_out).
  //    δ_out may alias `start`, start_out may alias `weights`.
  //    With a mask (no fit), only its moving blocks step, as apply's; the
  //    start is computed for every value.
  void apply_after_start(const float* g, const float* delta_prev, float* start_out, bool predicted,
                         float scale = 1.0f, StandinFit* fit = nullptr, const StepMask* mask = nullptr);
  void next_start(const float* start, const float* weights, float* delta_out, float* start_out,
                  bool predicted, float scale = 1.0f) const;

  // xxHash3-64 of the outer parameters' bytes (for more than 4M values, of
  // the xxHash3-64s of their 16 MiB blocks, hashed on every core): equal on
  // every node after a step, which is the mesh's consistency check.
  uint64_t params_hash() const;

  size_t size() const { return n_; }
  int64_t steps_taken() const { return steps_; }
  const std::vector<float>& params() const { return outer_; }
  const std::vector<float>& momentum() const { return momentum_; }

 private:
  void require_init(const char* what) const;
  void check_mask(const StepMask& mask) const;
  size_t n_;
  float lr_, mu_;
  bool nesterov_;
  bool initialized_ = false;
  int64_t steps_ = 0;
  std::vector<float> outer_, momentum_;
};

}  // namespace intellect
