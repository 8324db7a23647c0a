#include "dist/outer_steps.h"

#include <algorithm>

namespace intellect {

const char* step_phase_name(StepPhase p) {
  switch (p) {
    case StepPhase::averaging: return "averaging";
    case StepPhase::reform_pending: return "re-form pending";
    case StepPhase::committed: return "committed";
    case StepPhase::given_up: return "given up";
  }
  return "?";
}

void OuterSteps::announced(const Ring& ring, uint64_t round) {
  OuterStepState& s = steps_[ring.outer_step];  // a given-up step keeps its retries
  s.phase = StepPhase::averaging;
  s.ring = ring;
  s.round = round;
  s.completed.clear();
}

bool OuterSteps::active(int64_t step) const {
  const OuterStepState* s = find(step);
  return s && s->phase != StepPhase::given_up;
}

const OuterStepState* OuterSteps::find(int64_t step) const {
  auto it = steps_.find(step);
  return it == steps_.end() ? nullptr : &it->second;
}

OuterSteps::Failure OuterSteps::failed(int64_t step, uint64_t round, MembershipTime now) {
  auto it = steps_.find(step);
  if (it == steps_.end() || it->second.phase == StepPhase::given_up) return Failure::no_ring;
  OuterStepState& s = it->second;
  if (round != s.round) return Failure::stale;
  if (s.phase == StepPhase::committed) return Failure::committed;
  if (s.phase == StepPhase::reform_pending) return Failure::repeated;
  s.phase = StepPhase::reform_pending;
  s.reform_due = now + reform_delay_;
  return Failure::scheduled;
}

OuterSteps::Completion OuterSteps::completed(int64_t step, uint64_t round, uint64_t node) {
  auto it = steps_.find(step);
  if (it == steps_.end() || it->second.phase == StepPhase::given_up) return Completion::no_ring;
  OuterStepState& s = it->second;
  const bool member = std::find(s.ring.nodes.begin(), s.ring.nodes.end(), node) != s.ring.nodes.end();
  if (round != s.round || !member || s.phase == StepPhase::reform_pending) return Completion::stale;
  if (s.phase == StepPhase::committed) return Completion::committed;
  s.completed.insert(node);
  return Completion::recorded;
}

std::vector<OuterSteps::Commit> OuterSteps::take_committed(const std::function<bool(uint64_t)>& in_run) {
  std::vector<Commit> out;
  for (auto& [step, s] : steps_) {
    if (s.phase != StepPhase::averaging || s.completed.empty()) continue;
    const bool all = std::all_of(s.ring.nodes.begin(), s.ring.nodes.end(),
                                 [&](uint64_t n) { return s.completed.count(n) || !in_run(n); });
    if (!all) continue;
    s.phase = StepPhase::committed;
    out.push_back({step, s.round, s.ring});
  }
  return out;
}

std::vector<OuterSteps::Due> OuterSteps::take_due(MembershipTime now) {
  std::vector<Due> due;
  for (auto& [step, s] : steps_) {
    if (s.phase != StepPhase::reform_pending || s.reform_due > now) continue;
    const bool give_up = ++s.retries > max_retries_;
    s.phase = give_up ? StepPhase::given_up : StepPhase::averaging;
    due.push_back({step, give_up, s.ring});
  }
  return due;
}

}  // namespace intellect
