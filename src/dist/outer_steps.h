// The coordinator's outer steps once their ring is announced, as named
// phases with pure rules (no I/O, tested with a fake clock like Membership):
//
//   (readiness gathered by Membership) --announced--> averaging
//   averaging --a member reports the current round failed--> reform_pending
//   reform_pending --another report of that round--> reform_pending (counted once)
//   reform_pending --due, retries left--> averaging (the coordinator
//       re-forms the ring without the nodes that are gone and announces it)
//   reform_pending --due, max_retries used--> given_up (members are told)
//   averaging --every member's hash in--> done (forgotten)
//   any --the run rewinds to an older step--> forgotten
//
// A failed round is re-formed reform_delay after its first report, not at
// once: the connection-closed events of nodes that died with the round need
// that moment to arrive, and the coordinator's loop must not sleep for it.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

#include "dist/membership.h"

namespace intellect {

enum class StepPhase {
  averaging,       // a ring was announced; its members average, then report hashes
  reform_pending,  // a member reported the current round failed; re-formed at reform_due
  given_up,        // failed more than max_retries times; the step has no ring
};
const char* step_phase_name(StepPhase p);

struct OuterStepState {
  StepPhase phase = StepPhase::averaging;
  Ring ring;               // the newest announced ring
  uint64_t round = 0;      // its round
  int retries = 0;         // rings re-formed after a failure (kept when the step is given up)
  MembershipTime reform_due{};  // reform_pending only
};

class OuterSteps {
 public:
  OuterSteps(int max_retries, std::chrono::milliseconds reform_delay)
      : max_retries_(max_retries), reform_delay_(reform_delay) {}

  // A ring announced for its step as `round` (a first ring, or a re-formed one).
  void announced(const Ring& ring, uint64_t round);
  // The step has a ring its members are averaging in or about to be re-formed.
  bool active(int64_t step) const;
  // The step's state (null when it has none: never announced, done, or forgotten).
  const OuterStepState* find(int64_t step) const;

  // What a member's report that `round` of `step` failed means.
  enum class Failure {
    no_ring,    // the step has no active ring (done, given up, rewound): nothing to do
    stale,      // an older round, already replaced (or a round never announced)
    scheduled,  // the current round: re-formed reform_delay from now
    repeated,   // the current round, already scheduled: another member's report of it
  };
  Failure failed(int64_t step, uint64_t round, MembershipTime now);

  // Steps whose re-form is due, oldest first. Each counts a retry: with
  // retries left it is back to averaging (its old ring, until the caller
  // announces the re-formed one); past max_retries it is given up.
  struct Due {
    int64_t step;
    bool give_up;
    Ring ring;  // the failed ring
  };
  std::vector<Due> take_due(MembershipTime now);

  // Every member's hash arrived: the step is done.
  void done(int64_t step) { steps_.erase(step); }
  // The run goes on from outer step `held`: every newer step is forgotten.
  void rewind(int64_t held) { steps_.erase(steps_.upper_bound(held), steps_.end()); }

 private:
  int max_retries_;
  std::chrono::milliseconds reform_delay_;
  std::map<int64_t, OuterStepState> steps_;
};

}  // namespace intellect
