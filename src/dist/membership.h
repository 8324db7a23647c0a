// The coordinator's view of a run: which nodes are in it, which data
// partition each reads, who is alive, who is ready for which outer step, the
// ring each outer step uses, and whether the nodes agree on the result.
//
// Pure state and rules, no I/O: the coordinator's network loop calls it with
// the time, so every rule (timeouts, eviction, ring forming, partition
// hand-over) is tested with a fake clock.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace intellect {

using MembershipClock = std::chrono::steady_clock;
using MembershipTime = MembershipClock::time_point;

struct MembershipOptions {
  std::chrono::milliseconds heartbeat_timeout{6000};  // INTELLECT-1: 2 s beats, 6 s timeout
  // After the first node is ready for an outer step, how long the others get
  // before the ring forms without them (they join the next round).
  std::chrono::milliseconds ready_timeout{30000};
  // Nodes a ring waits for (up to ready_timeout) even when every member is
  // ready: a swarm that starts together averages together from the first step.
  size_t min_ring = 1;
};

// What a member holds of the run's outer state, as it says in its
// heartbeats (on the wire: the outer step, -1 for nothing).
struct HeldState {
  enum class Kind {
    nothing,  // no outer state yet (a joiner before its download)
    unknown,  // restored after a coordinator restart, not heard from since: it may hold anything
    step,     // the outer parameters as of outer step `step`
  };
  Kind kind = Kind::nothing;
  int64_t step = -1;  // Kind::step only

  static HeldState of_wire(int64_t outer_step) {
    return outer_step < 0 ? HeldState{} : HeldState{Kind::step, outer_step};
  }
  static HeldState unknown_yet() { return HeldState{Kind::unknown, -1}; }
  // Outer step `s` or a newer one is (or, unknown, may be) held.
  bool at_least(int64_t s) const { return kind == Kind::unknown || step >= s; }
  bool operator==(const HeldState&) const = default;
};

struct NodeRecord {
  uint64_t id = 0;
  std::string name;       // for logs
  std::string address;    // where peers reach it for ring traffic, "host:port"
  uint64_t partition = 0; // the data partition it reads
  MembershipTime last_seen{};
  std::optional<int64_t> ready_for;  // the outer step it reported ready for, until its ring forms or the step is done
  std::string state_address;  // where it serves its state to joiners ("" = it does not)
  // False for a node that joined a run in progress until it first takes part
  // in a ring: rings never wait for it before then.
  bool synced = true;
  // A joiner one round behind (it holds step s - 2 and fetches round s - 1)
  // is waited for once, at step s (try_form_ring); set when a ring formed
  // without it while it was.
  bool chance_used = false;
  HeldState held;  // control::Heartbeat
};

// The newest outer state a member holds, and one member holding it.
struct NewestHeld {
  HeldState held;
  uint64_t node = 0;  // 0 when nobody holds anything
  bool operator==(const NewestHeld&) const = default;
};

struct Registration {
  uint64_t id;
  uint64_t partition;
  uint64_t epoch;  // membership epoch after the join
};

struct Ring {
  int64_t outer_step;
  uint64_t epoch;
  std::vector<uint64_t> nodes;  // ring order: each sends to the next
};

struct HashCheck {
  bool complete = false;               // every ring member reported
  bool agree = false;                  // and all hashes are equal
  std::map<uint64_t, uint64_t> hashes; // node -> hash
};

class Membership {
 public:
  explicit Membership(MembershipOptions options = {});

  // A new node: the lowest partition freed by a node that left, else a fresh
  // one. It is synced (waited for by rings, no download) in a fresh run, and
  // when it holds (`held_step`, on the wire: -1 nothing) the newest step
  // while the run's position is only what nodes have said: nothing newer is
  // known to exist. After a ring this coordinator formed, or restored from
  // its state file, a joiner fetches the state even when it claims the same
  // step: its state may be of another history (a step redone after a rewind).
  Registration join(const std::string& name, const std::string& address, MembershipTime now,
                    int64_t held_step = -1);
  void heartbeat(uint64_t id, MembershipTime now);  // fails for an unknown (e.g. evicted) node
  void leave(uint64_t id);                          // a clean goodbye; its partition is freed
  // Nodes silent for longer than the heartbeat timeout, removed; returns them.
  std::vector<uint64_t> evict_silent(MembershipTime now);

  void set_state_address(uint64_t id, const std::string& address);
  // A synced node that serves state, other than `exclude` (lowest id first).
  std::optional<uint64_t> pick_donor(const std::set<uint64_t>& exclude = {}) const;
  // Up to `max` such nodes (lowest ids first): a joiner's further donors.
  std::vector<uint64_t> pick_donors(const std::set<uint64_t>& exclude, size_t max) const;
  // The newest outer step known to be under way or done (-1: none yet, a fresh run).
  int64_t last_ring_step() const { return last_ring_step_; }
  // A node ready for `step` shows that step − 1 was done. Returns the nodes
  // still waiting on an older step (their ring went on without them, or was
  // done before a restart): they are no longer ready and must catch up.
  std::vector<std::pair<uint64_t, int64_t>> note_step_done(int64_t step);  // (node, the step it waited on)

  // Outer steps: nodes report ready; the ring forms when every synced live
  // node (and every joiner already holding the state the step starts from)
  // is ready for the step, or ready_timeout after the first one was.
  // Nodes that joined mid-run and are ready go in too, and are synced from then.
  void ready(uint64_t id, int64_t outer_step, MembershipTime now);
  std::optional<Ring> try_form_ring(int64_t outer_step, MembershipTime now);
  // After a failed round: the same step, without the nodes that failed.
  Ring reform_ring(const Ring& failed, const std::vector<uint64_t>& lost);

  // Each ring member reports the hash of its outer parameters after the step.
  HashCheck report_hash(const Ring& ring, uint64_t id, uint64_t hash);

  // What a node says it holds (heartbeats, joins; a Ready for s means s − 1,
  // a hash for s means s). Only goes up: a node gives up a state only for a
  // newer one, except in a rewind.
  void note_held(uint64_t id, int64_t step);
  // The newest outer state a member holds (unknown while a restored member
  // has not said; nothing when nobody holds any), and the first member
  // holding it.
  NewestHeld newest_held() const;
  // The run goes on from outer step `step` (every holder of a newer one is
  // gone): members holding it are synced (donors, and rings wait for them),
  // the others must take it from a donor; readiness for any other step than
  // step + 1 is void.
  void rewind(int64_t step);

  bool contains(uint64_t id) const { return nodes_.count(id) != 0; }
  const NodeRecord& node(uint64_t id) const;
  size_t size() const { return nodes_.size(); }
  uint64_t epoch() const { return epoch_; }
  std::vector<uint64_t> ids() const;

  // The small state a coordinator persists to survive a restart.
  nlohmann::json to_json() const;
  static Membership from_json(const nlohmann::json& j, MembershipOptions options, MembershipTime now);

 private:
  MembershipOptions opt_;
  std::map<uint64_t, NodeRecord> nodes_;
  std::set<uint64_t> free_partitions_;
  uint64_t next_id_ = 1, next_partition_ = 0, epoch_ = 0;
  int64_t last_ring_step_ = -1;
  // A ring formed here, or one restored: the run's position is this
  // coordinator's own knowledge, not only what nodes said (see join).
  bool position_witnessed_ = false;
  // After a restart, the newest step whose ring was announced may or may not
  // have completed: its ring forms only when every member is ready for it (no
  // timeout), and a node ready for the step after settles that it completed.
  int64_t uncertain_step_ = -1;
  std::map<int64_t, MembershipTime> first_ready_;
  std::map<std::pair<int64_t, uint64_t>, std::map<uint64_t, uint64_t>> hashes_;  // (step, epoch) -> reports
};

}  // namespace intellect
