#include "dist/membership.h"

#include <algorithm>
#include <functional>

#include "util/error.h"

namespace intellect {

Membership::Membership(MembershipOptions options) : opt_(options) {}

Registration Membership::join(const std::string& name, const std::string& address, MembershipTime now,
                              int64_t held_step) {
  NodeRecord n;
  n.id = next_id_++;
  n.name = name;
  n.address = address;
  n.last_seen = now;
  n.held = HeldState::of_wire(held_step);
  // A run in progress: a joiner fetches the state first, unless the run's
  // position is only what other resumed nodes said and it holds as much
  // (nodes resuming together after a coordinator lost its state).
  n.synced = last_ring_step_ < 0 || (!position_witnessed_ && n.held.kind == HeldState::Kind::step &&
                                     n.held.step >= last_ring_step_);
  if (!free_partitions_.empty()) {
    // A joiner takes over the data of a node that left, from where it stopped
    // (the position itself is tracked by the coordinator's data accounting).
    n.partition = *free_partitions_.begin();
    free_partitions_.erase(free_partitions_.begin());
  } else {
    n.partition = next_partition_++;
  }
  nodes_[n.id] = n;
  ++epoch_;
  return {n.id, n.partition, epoch_};
}

const NodeRecord& Membership::node(uint64_t id) const {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) fail("node ", id, " is not a member of the run (evicted or never joined)");
  return it->second;
}

void Membership::heartbeat(uint64_t id, MembershipTime now) {
  auto it = nodes_.find(id);
  if (it == nodes_.end())
    fail("heartbeat from node ", id, ", which is not a member (evicted after silence?): it must join again");
  it->second.last_seen = std::max(it->second.last_seen, now);
}

void Membership::leave(uint64_t id) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return;
  free_partitions_.insert(it->second.partition);
  nodes_.erase(it);
  ++epoch_;
}

std::vector<uint64_t> Membership::evict_silent(MembershipTime now) {
  std::vector<uint64_t> gone;
  for (const auto& [id, n] : nodes_)
    if (now - n.last_seen > opt_.heartbeat_timeout) gone.push_back(id);
  for (uint64_t id : gone) leave(id);
  return gone;
}

void Membership::set_state_address(uint64_t id, const std::string& address) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) fail("node ", id, " is not a member");
  it->second.state_address = address;
}

std::optional<uint64_t> Membership::pick_donor(const std::set<uint64_t>& exclude) const {
  for (const auto& [id, n] : nodes_)
    if (!exclude.count(id) && n.synced && !n.state_address.empty()) return id;
  return std::nullopt;
}

std::vector<uint64_t> Membership::pick_donors(const std::set<uint64_t>& exclude, size_t max) const {
  std::vector<uint64_t> out;
  for (const auto& [id, n] : nodes_)
    if (out.size() < max && !exclude.count(id) && n.synced && !n.state_address.empty()) out.push_back(id);
  return out;
}

std::vector<std::pair<uint64_t, int64_t>> Membership::note_step_done(int64_t step) {
  std::vector<std::pair<uint64_t, int64_t>> behind;
  if (step - 1 <= last_ring_step_) return behind;
  last_ring_step_ = step - 1;
  if (uncertain_step_ <= last_ring_step_) uncertain_step_ = -1;
  for (auto& [id, n] : nodes_)
    if (n.ready_for && *n.ready_for <= last_ring_step_) {
      behind.emplace_back(id, *n.ready_for);
      n.ready_for.reset();
    }
  for (auto it = first_ready_.begin(); it != first_ready_.end();)
    it = it->first <= last_ring_step_ ? first_ready_.erase(it) : std::next(it);
  return behind;
}

std::vector<uint64_t> Membership::ids() const {
  std::vector<uint64_t> v;
  for (const auto& [id, n] : nodes_) v.push_back(id);
  return v;
}

void Membership::ready(uint64_t id, int64_t outer_step, MembershipTime now) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) fail("ready from node ", id, ", which is not a member");
  it->second.ready_for = outer_step;
  it->second.last_seen = std::max(it->second.last_seen, now);
  first_ready_.emplace(outer_step, now);
}

std::optional<Ring> Membership::try_form_ring(int64_t outer_step, MembershipTime now) {
  auto first = first_ready_.find(outer_step);
  if (first == first_ready_.end()) return std::nullopt;
  std::vector<uint64_t> ready;
  for (const auto& [id, n] : nodes_)
    if (n.ready_for == outer_step) ready.push_back(id);
  if (ready.empty()) return std::nullopt;
  // Rings wait (up to the ready timeout) for synced nodes, and for a joiner
  // once it holds the state this step starts from: caught up, it is a peer
  // doing the same inner steps. Not waited for, a joiner a moment behind the
  // others would be late at every step and never enter a ring. A joiner
  // still one round behind (fetching round s - 1 while the others finish
  // the inner steps of s, which happens whenever a round's compute is
  // shorter than one round's download: the eighth session's join on the
  // H200) is waited for once: without that it is late at every step; waited
  // for at every step, one too slow for the run would cost every ring the
  // ready timeout.
  auto known_from = [&](const NodeRecord& n, int64_t step) {
    return n.held.kind != HeldState::Kind::unknown && n.held.step >= step;
  };
  auto one_behind = [&](const NodeRecord& n) {
    return !n.synced && !n.chance_used && known_from(n, outer_step - 2) && !known_from(n, outer_step - 1);
  };
  auto waited_for = [&](const NodeRecord& n) { return n.synced || known_from(n, outer_step - 1) || one_behind(n); };
  size_t synced = 0, synced_ready = 0;
  for (const auto& [id, n] : nodes_) {
    synced += waited_for(n);
    synced_ready += waited_for(n) && n.ready_for == outer_step;
  }
  const bool everyone = synced_ready == synced && ready.size() >= opt_.min_ring;
  if (outer_step == uncertain_step_) {
    // Maybe done before the restart: only with every member (those still on
    // their inner steps will show by their next Ready that it was done).
    if (ready.size() != nodes_.size()) return std::nullopt;
  } else if (!everyone && now - first->second < opt_.ready_timeout) {
    return std::nullopt;
  }
  first_ready_.erase(first_ready_.begin(), std::next(first));  // older steps are done too
  for (auto& [id, n] : nodes_)
    if (n.ready_for != outer_step && one_behind(n)) n.chance_used = true;
  for (uint64_t id : ready) nodes_[id].synced = true;
  last_ring_step_ = std::max(last_ring_step_, outer_step);
  position_witnessed_ = true;
  return Ring{outer_step, epoch_, ready};  // std::map order: ascending ids
}

Ring Membership::reform_ring(const Ring& failed, const std::vector<uint64_t>& lost) {
  Ring r = failed;
  r.nodes.erase(std::remove_if(r.nodes.begin(), r.nodes.end(),
                               [&](uint64_t id) {
                                 return !nodes_.count(id) ||
                                        std::find(lost.begin(), lost.end(), id) != lost.end();
                               }),
                r.nodes.end());
  r.epoch = epoch_;
  return r;
}

HashCheck Membership::report_hash(const Ring& ring, uint64_t id, uint64_t hash) {
  if (std::find(ring.nodes.begin(), ring.nodes.end(), id) == ring.nodes.end())
    fail("hash from node ", id, ", which is not in the ring of outer step ", ring.outer_step);
  auto& reports = hashes_[{ring.outer_step, ring.epoch}];
  reports[id] = hash;
  HashCheck c;
  c.hashes = reports;
  c.complete = reports.size() == ring.nodes.size();
  if (c.complete) {
    c.agree = std::all_of(reports.begin(), reports.end(),
                          [&](const auto& kv) { return kv.second == reports.begin()->second; });
    hashes_.erase({ring.outer_step, ring.epoch});
  }
  return c;
}

void Membership::note_held(uint64_t id, int64_t step) {
  auto it = nodes_.find(id);
  if (it == nodes_.end() || step < -1) return;
  HeldState& held = it->second.held;
  const HeldState said = HeldState::of_wire(step);
  if (held.kind == HeldState::Kind::unknown || said.step > held.step) held = said;
}

NewestHeld Membership::newest_held() const {
  // unknown > any step > nothing: a member not heard from since a restart
  // may hold the newest step, and the run must not go back past it.
  auto rank = [](const HeldState& h) {
    return h.kind == HeldState::Kind::unknown ? 2 : h.kind == HeldState::Kind::step ? 1 : 0;
  };
  NewestHeld best;
  for (const auto& [id, n] : nodes_)
    if (rank(n.held) > rank(best.held) || (rank(n.held) == 1 && rank(best.held) == 1 && n.held.step > best.held.step))
      best = {n.held, id};
  return best;
}

void Membership::rewind(int64_t step) {
  last_ring_step_ = step;
  uncertain_step_ = -1;
  for (auto& [id, n] : nodes_) {
    n.synced = n.held.at_least(step);
    if (n.ready_for != step + 1) n.ready_for.reset();
  }
  first_ready_.erase(first_ready_.upper_bound(step + 1), first_ready_.end());
  first_ready_.erase(first_ready_.begin(), first_ready_.lower_bound(step + 1));
  hashes_.erase(hashes_.lower_bound({step + 1, 0}), hashes_.end());
}

nlohmann::json Membership::to_json() const {
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& [id, n] : nodes_)
    nodes.push_back({{"id", id}, {"name", n.name}, {"address", n.address}, {"partition", n.partition},
                     {"ready_step", n.ready_for.value_or(-1)}, {"state_address", n.state_address}, {"synced", n.synced}});
  return {{"epoch", epoch_},
          {"next_id", next_id_},
          {"next_partition", next_partition_},
          {"free_partitions", std::vector<uint64_t>(free_partitions_.begin(), free_partitions_.end())},
          {"last_ring_step", last_ring_step_},
          {"nodes", nodes}};
}

Membership Membership::from_json(const nlohmann::json& j, MembershipOptions options, MembershipTime now) {
  Membership m(options);
  try {
    m.epoch_ = j.at("epoch").get<uint64_t>() + 1;  // a restart is a membership change
    m.next_id_ = j.at("next_id").get<uint64_t>();
    m.next_partition_ = j.at("next_partition").get<uint64_t>();
    for (uint64_t p : j.at("free_partitions")) m.free_partitions_.insert(p);
    const int64_t announced = j.value("last_ring_step", int64_t{-1});
    m.last_ring_step_ = announced >= 0 ? announced - 1 : -1;
    m.uncertain_step_ = announced;
    m.position_witnessed_ = announced >= 0;
    for (const auto& n : j.at("nodes")) {
      NodeRecord r;
      r.id = n.at("id").get<uint64_t>();
      r.name = n.at("name").get<std::string>();
      r.address = n.at("address").get<std::string>();
      r.partition = n.at("partition").get<uint64_t>();
      // Readiness is not restored: a node that was waiting says so again when
      // it reconnects, and a ring never forms around a node that has not.
      (void)n.at("ready_step").get<int64_t>();
      r.ready_for.reset();
      r.state_address = n.value("state_address", std::string());
      r.synced = n.value("synced", true);
      r.held = HeldState::unknown_yet();  // until it says again
      r.last_seen = now;  // nodes get a full timeout to find the restarted coordinator
      if (r.id >= m.next_id_ || r.partition >= m.next_partition_)
        fail("membership state: node ", r.id, " has an id or partition beyond the recorded counters");
      m.nodes_[r.id] = r;
    }
  } catch (const nlohmann::json::exception& e) {
    fail("membership state is malformed: ", e.what());
  }
  return m;
}

}  // namespace intellect
