// The coordinator's outer steps once their ring is announced, as named
// phases with pure rules (no I/O, tested with a fake clock like Membership):
//
//   (readiness gathered by Membership) --announced--> averaging
//   averaging --every member still in the run completed the round--> committed
//       (its members are told to apply it; until then none does)
//   averaging --a member reports the current round failed--> reform_pending
//       (members that completed it meanwhile drop their result and redo it)
//   reform_pending --another report of that round--> reform_pending (counted once)
//   reform_pending --due, retries left--> averaging (the coordinator
//       re-forms the ring without the nodes that are gone and announces it)
//   reform_pending --due, max_retries used--> given_up (members are told)
//   committed --a member reports the round failed--> committed (ignored:
//       every member already holds that round, and is applying it)
//   averaging or committed --every member's hash in--> done (forgotten)
//   any --the run rewinds to an older step--> forgotten
//
// A failed round is re-formed reform_delay after its first report, not at
// once: the connection-closed events of nodes that died with the round need
// that moment to arrive, and the coordinator's loop must not sleep for it.
//
// Why a commit: a ring round is not atomic. A node can hold every
// contribution (the sparse all-gather) or every averaged segment (the dense
// ring) while a neighbour fails the round at its last message. If it
// applied that result while the others redid the round without the failed
// node, honest nodes would hold different outer parameters. So a node that
// completes a round applies it only on the coordinator's word, given once
// no member can still fail it.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "dist/membership.h"

namespace intellect {

enum class StepPhase {
  averaging,       // a ring was announced; its members average it
  reform_pending,  // a member reported the current round failed; re-formed at reform_due
  committed,       // every member still in the run completed the round; they apply it and report hashes
  given_up,        // failed more than max_retries times; the step has no ring
};
const char* step_phase_name(StepPhase p);

struct OuterStepState {
  StepPhase phase = StepPhase::averaging;
  Ring ring;               // the newest announced ring
  uint64_t round = 0;      // its round
  int retries = 0;         // rings re-formed after a failure (kept when the step is given up)
  MembershipTime reform_due{};  // reform_pending only
  std::set<uint64_t> completed;  // members that completed `round` (averaging, committed)
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
    committed,  // the current round, already committed: too late to fail it (nothing to do)
  };
  Failure failed(int64_t step, uint64_t round, MembershipTime now);

  // What a member's report that it completed `round` of `step` means.
  enum class Completion {
    no_ring,    // the step has no active ring: nothing to do
    stale,      // not the current round, or the current one already reported failed, or
                // from a node outside its ring: the node hears of what replaces it
    recorded,   // counted towards the round's commit (take_committed)
    committed,  // the round is committed already: tell the node again (it reconnected)
  };
  Completion completed(int64_t step, uint64_t round, uint64_t node);
  // Rounds that every member still in the run (`in_run`) completed, and at
  // least one did: committed now, oldest step first. A member gone from the
  // run without a word does not hold the commit up: it cannot apply anything
  // any more, and the others all hold the same result.
  struct Commit {
    int64_t step;
    uint64_t round;
    Ring ring;
  };
  std::vector<Commit> take_committed(const std::function<bool(uint64_t)>& in_run);

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
