// The DiLoCo side of a node: the outer optimizer, its fp32 host buffers, and
// the protocol that gets each outer step's averaged pseudo-gradient: in the
// ring, from a donor when late for it, or the run's whole state from a donor
// (joining, or when nobody has the round any more). The training loop calls
// start() once and step() every diloco.inner_steps steps; everything between
// (rings, retries, rewinds, catching up) happens inside.
//
// Owned by the training thread, which is blocked while step() runs. It
// touches the backend's parameters and optimizer state (only between inner
// steps, from that thread), the MeshNode's calls, and its own buffers.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/diloco.h"
#include "train/backend.h"
#include "train/config.h"

namespace intellect {

class MeshNode;

class OuterSync {
 public:
  // How an outer step got its average; the states a step passes through.
  enum class Way {
    ring,              // this node's pseudo-gradient averaged in the announced ring
    round_from_donor,  // late for the ring: the round's average from a node that has it
    state_from_donor,  // nobody has the round any more: the run's state afresh, as a joiner
  };
  static const char* way_name(Way w);

  // `params` is the training loop's host copy of the weights (flat), which
  // the outer step reads and writes, and which holds the round's average in
  // between (one fp32 copy of the model fewer); `data_position` says where the loader
  // is (reported to the coordinator with each ring).
  OuterSync(const Config& cfg, Backend& backend, MeshNode* mesh, std::vector<float>& params,
            const std::atomic<bool>* stop, std::function<std::string()> data_position);
  ~OuterSync();

  // Where this node's outer state comes from: a donor when the coordinator
  // named one (a run in progress), else the resumed checkpoint's outer state,
  // else the current weights. Returns the inner step to start at (a joiner
  // lines up with the donor's progress).
  int64_t start(int64_t start_step, bool resumed, const std::vector<float>& resumed_outer,
                const std::vector<float>& resumed_momentum);
  // How this node joined a run in progress (null otherwise), for the metrics.
  const nlohmann::json& joined() const { return joined_; }

  // The outer step that ends at inner step `steps_done`: returns its metrics
  // line. take_skip_to(): where a late node goes on (0: the next step as usual).
  nlohmann::json step(int64_t steps_done);
  int64_t take_skip_to();

  // A snapshot of the outer state for joiners (when one asks); seconds spent.
  double publish_snapshot(int64_t steps_done);
  int64_t outer_done() const { return outer_done_; }
  const OuterOptimizer& optimizer() const { return *outer_; }
  // fp32 bytes this component holds (the loop's weights, which carry the
  // average between the pseudo-gradient and the step, not counted).
  size_t host_bytes() const;

 private:
  struct RunState {
    int64_t outer_step = 0;
    uint64_t state_bytes = 0;
    nlohmann::json summary;
  };
  RunState take_run_state(int64_t at_least);
  bool round_from_donor(int64_t k);
  int64_t line_up(int64_t k);

  const Config& cfg_;
  Backend& backend_;
  MeshNode* mesh_;
  std::vector<float>& params_;
  const std::atomic<bool>* stop_;
  std::function<std::string()> data_position_;
  std::unique_ptr<OuterOptimizer> outer_;
  std::vector<float> pseudo_;  // the ring's input, untouched by it (a retried round starts from it)
  std::vector<float> snap_m_, snap_v_;  // the moments' host copy, kept: the next snapshot reuses its pages
  nlohmann::json joined_;
  int64_t outer_done_ = 0;  // the outer step whose result outer_ holds
  int64_t skip_to_ = 0;     // a late node's next step
};

}  // namespace intellect
