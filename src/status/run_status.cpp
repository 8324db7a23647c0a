#include "status/run_status.h"

#include <algorithm>
#include <ctime>

namespace intellect {

RunStatus::RunStatus(std::string title)
    : title_(std::move(title)), t0_(std::chrono::steady_clock::now()), started_unix_(std::time(nullptr)) {}

double RunStatus::now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

void RunStatus::event(EventView e) {
  events_.push_back(std::move(e));
  if (events_.size() > kMaxEvents) {
    events_.pop_front();
    ++events_dropped_;
  }
}

OuterStepView* RunStatus::find_outer(int64_t step) {
  for (auto it = outer_.rbegin(); it != outer_.rend(); ++it)
    if (it->step == step) return &*it;
  return nullptr;
}

void RunStatus::node_joined(uint64_t id, const std::string& name, const std::string& address, uint64_t donor) {
  std::lock_guard<std::mutex> lock(mu_);
  NodeView& n = members_[id];
  n = NodeView{};
  n.id = id;
  n.name = name;
  n.address = address;
  n.state = donor ? "fetching state" : "training";
  n.joined_at = n.last_seen_at = now();
  ++joins_;
  EventView e{now(), "join", id, donor ? "fetches the run's state" : "starts the run", 0, 0, donor};
  join_event_[id] = events_dropped_ + events_.size();
  event(std::move(e));
}

void RunStatus::node_back(uint64_t id, const std::string& name, const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = members_.find(id);
  if (it == members_.end()) {
    NodeView& n = members_[id];
    n.id = id;
    n.name = name;
    n.address = address;
    n.state = "training";
    n.joined_at = n.last_seen_at = now();
    return;  // restored from the coordinator's state file: not news
  }
  it->second.last_seen_at = now();
  event({now(), "back", id, "reconnected", 0, 0, 0});
}

void RunStatus::node_status(uint64_t id, const control::NodeStatus& s) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = members_.find(id);
  if (it == members_.end()) return;
  NodeView& n = it->second;
  n.last_seen_at = now();
  if (n.state == "fetching state") n.state = "training";
  // A rewound or restarted node can report an older step: the curve restarts there.
  auto add = [](std::deque<LossPoint>& curve, int64_t step, double v) {
    while (!curve.empty() && curve.back().step >= step) curve.pop_back();
    curve.push_back({step, v});
    if (curve.size() > kMaxLossPoints) curve.pop_front();
  };
  if (s.has_loss && (!n.status || n.status->inner_step != s.inner_step || n.loss.empty()))
    add(n.loss, s.inner_step, s.loss);
  if (s.has_val_loss && (n.val_loss.empty() || n.val_loss.back().step != s.inner_step ||
                         n.val_loss.back().loss != s.val_loss))
    add(n.val_loss, s.inner_step, s.val_loss);
  // The join's figures arrive with the joiner's first reports.
  if (s.join_s > 0) {
    auto j = join_event_.find(id);
    if (j != join_event_.end() && j->second >= events_dropped_ && j->second - events_dropped_ < events_.size()) {
      EventView& e = events_[j->second - events_dropped_];
      e.seconds = s.join_s;
      e.bytes = s.join_bytes;
      e.detail = "fetched the run's state";
    }
    join_event_.erase(id);
  }
  // Each member reports the newest outer step it took part in.
  if (s.outer_step >= 0) {
    if (OuterStepView* o = find_outer(s.outer_step); o && (!n.status || n.status->outer_step != s.outer_step)) {
      o->allreduce_s = std::max(o->allreduce_s, s.allreduce_s);
      o->bytes += s.outer_bytes;
    }
  }
  n.status = s;
}

void RunStatus::node_state(uint64_t id, const std::string& state) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = members_.find(id);
  if (it != members_.end()) it->second.state = state;
}

void RunStatus::node_late(uint64_t id, int64_t outer_step) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = members_.find(id);
  if (it == members_.end()) return;
  it->second.state = "late";
  event({now(), "late", id, "catches up outer step " + std::to_string(outer_step) + " from a donor", 0, 0, 0});
}

void RunStatus::node_gone(uint64_t id, bool evicted, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = members_.find(id);
  if (it == members_.end()) return;
  NodeView n = std::move(it->second);
  members_.erase(it);
  join_event_.erase(id);
  n.state = evicted ? "evicted" : "left";
  n.last_seen_at = now();
  (evicted ? evictions_ : departures_)++;
  event({now(), evicted ? "evict" : "leave", id, why, 0, 0, 0});
  gone_.push_back(std::move(n));
  if (gone_.size() > kMaxGoneNodes) gone_.pop_front();
}

void RunStatus::ring_announced(int64_t step, uint64_t round, const std::vector<uint64_t>& ring, bool retry) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, n] : members_)
    if (std::find(ring.begin(), ring.end(), id) != ring.end()) n.state = "in ring";
  OuterStepView* o = find_outer(step);
  if (!o || o->rewinds != rewinds_) {
    outer_.push_back(OuterStepView{});
    if (outer_.size() > kMaxOuterSteps) outer_.pop_front();
    o = &outer_.back();
    o->step = step;
    o->announced_at = now();
    o->rewinds = rewinds_;
  } else if (retry) {
    ++o->retries;
  }
  o->round = round;
  o->ring = ring;
}

void RunStatus::outer_done(int64_t step, const std::string& agreement) {
  std::lock_guard<std::mutex> lock(mu_);
  (agreement == "agreed" ? agreed_ : diverged_)++;
  OuterStepView* o = find_outer(step);
  if (!o) return;
  o->agreement = agreement;
  o->done_at = now();
  for (auto& [id, n] : members_)
    if (n.state == "in ring" && std::find(o->ring.begin(), o->ring.end(), id) != o->ring.end()) n.state = "training";
}

void RunStatus::rewound(int64_t to_step, uint64_t rewinds) {
  std::lock_guard<std::mutex> lock(mu_);
  rewinds_ = rewinds;
  event({now(), "rewind", 0, "the run went back to outer step " + std::to_string(to_step), 0, 0, 0});
}

void RunStatus::local_outer_step(int64_t step, double allreduce_s, uint64_t bytes, const std::string& agreement) {
  std::lock_guard<std::mutex> lock(mu_);
  OuterStepView o;
  o.step = step;
  o.announced_at = o.done_at = now();
  o.allreduce_s = allreduce_s;
  o.bytes = bytes;
  o.agreement = agreement;
  for (const auto& [id, n] : members_) o.ring.push_back(id);
  outer_.push_back(std::move(o));
  if (outer_.size() > kMaxOuterSteps) outer_.pop_front();
}

RunSnapshot RunStatus::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  RunSnapshot s;
  s.title = title_;
  s.now = now();
  s.started_unix = started_unix_;
  for (const auto& [id, n] : members_) s.nodes.push_back(n);
  for (auto it = gone_.rbegin(); it != gone_.rend(); ++it) s.nodes.push_back(*it);
  s.outer.assign(outer_.begin(), outer_.end());
  s.events.assign(events_.begin(), events_.end());
  s.agreed = agreed_;
  s.diverged = diverged_;
  s.joins = joins_;
  s.evictions = evictions_;
  s.departures = departures_;
  s.rewinds = rewinds_;
  return s;
}

}  // namespace intellect
