// The run as its status page shows it: the members and their state, what
// each reports with its heartbeats, and a bounded history of outer steps,
// joins, departures and rewinds.
//
// Threads: written by one thread (the coordinator's loop, or a standalone
// node's training thread) through short calls that only touch this object's
// containers under its mutex; read by the status server's thread through
// snapshot(), a copy taken under the same mutex, which it renders after
// releasing it. Every container is bounded, so neither side ever waits long.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dist/control.h"

namespace intellect {

struct LossPoint {
  int64_t step = 0;
  double loss = 0;
};

struct NodeView {
  uint64_t id = 0;
  std::string name, address;
  // "fetching state", "training", "waiting for ring", "in ring", "late",
  // "left", "evicted"
  std::string state;
  double joined_at = 0, last_seen_at = 0;  // seconds since the status began
  std::optional<control::NodeStatus> status;
  std::deque<LossPoint> loss, val_loss;  // the newest kMaxLossPoints each
};

struct OuterStepView {
  int64_t step = 0;
  uint64_t round = 0;        // the newest announced round of this step
  std::vector<uint64_t> ring;  // node ids, in ring order
  int retries = 0;           // rounds re-formed after a failure
  double announced_at = 0, done_at = -1;
  double allreduce_s = 0;    // the slowest member's, as reported
  uint64_t bytes = 0;        // sent + received, summed over the members that reported
  std::string agreement = "pending";  // pending | agreed | diverged | alone
  uint64_t rewinds = 0;      // the run's rewind count when it was announced
};

struct EventView {
  double at = 0;
  std::string kind;  // join | back | leave | evict | late | rewind
  uint64_t node = 0;
  std::string detail;
  // join: how long fetching the state took, how many bytes, from which donor
  double seconds = 0;
  uint64_t bytes = 0, donor = 0;
};

struct RunSnapshot {
  std::string title;
  double now = 0;           // seconds since the status began
  int64_t started_unix = 0;
  std::vector<NodeView> nodes;  // members first (by id), then the most recently gone
  std::vector<OuterStepView> outer;  // oldest first
  std::vector<EventView> events;     // oldest first
  int64_t agreed = 0, diverged = 0, joins = 0, evictions = 0, departures = 0;
  uint64_t rewinds = 0;
};

class RunStatus {
 public:
  static constexpr size_t kMaxLossPoints = 600;
  static constexpr size_t kMaxOuterSteps = 300;
  static constexpr size_t kMaxEvents = 300;
  static constexpr size_t kMaxGoneNodes = 64;

  explicit RunStatus(std::string title);

  void node_joined(uint64_t id, const std::string& name, const std::string& address, uint64_t donor);
  // Reconnected to a restarted coordinator (added if this status never saw it join).
  void node_back(uint64_t id, const std::string& name, const std::string& address);
  void node_status(uint64_t id, const control::NodeStatus& s);
  void node_state(uint64_t id, const std::string& state);
  void node_gone(uint64_t id, bool evicted, const std::string& why);
  void node_late(uint64_t id, int64_t outer_step);

  void ring_announced(int64_t step, uint64_t round, const std::vector<uint64_t>& ring, bool retry);
  void outer_done(int64_t step, const std::string& agreement);
  void rewound(int64_t to_step, uint64_t rewinds);
  // A node's own outer step, for its own page (agreement: "alone" without a
  // mesh; in one, the coordinator's page has the check).
  void local_outer_step(int64_t step, double allreduce_s, uint64_t bytes, const std::string& agreement);

  RunSnapshot snapshot() const;

 private:
  double now() const;
  void event(EventView e);
  OuterStepView* find_outer(int64_t step);

  mutable std::mutex mu_;
  std::string title_;
  std::chrono::steady_clock::time_point t0_;
  int64_t started_unix_;
  std::map<uint64_t, NodeView> members_;
  std::deque<NodeView> gone_;
  std::deque<OuterStepView> outer_;
  std::deque<EventView> events_;
  int64_t agreed_ = 0, diverged_ = 0, joins_ = 0, evictions_ = 0, departures_ = 0;
  uint64_t rewinds_ = 0;
  std::map<uint64_t, size_t> join_event_;  // node -> its join event's sequence number (to add the fetch figures)
  size_t events_dropped_ = 0;              // sequence number of events_.front()
};

}  // namespace intellect
