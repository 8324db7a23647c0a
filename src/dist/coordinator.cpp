#include "dist/coordinator.h"

#include <algorithm>
#include <filesystem>
#include <thread>

#include "dist/norm_outliers.h"
#include "dist/ring_allreduce.h"
#include "dist/ring_evidence.h"
#include "dist/run_settings.h"
#include "dist/sparse_allgather.h"
#include "status/status_routes.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {

Coordinator::Coordinator(CoordinatorOptions options)
    : opt_(std::move(options)),
      transport_(TransportOptions{opt_.credentials, std::chrono::milliseconds(10000), std::chrono::milliseconds(60000),
                                  size_t(16) << 20, size_t(16) << 20, 256, opt_.log,
                                  opt_.unsealed_frames_for_benchmarks}),
      members_(opt_.membership),
      steps_(opt_.max_retries, kReformDelay) {
  if (!opt_.state_file.empty() && std::filesystem::exists(opt_.state_file)) {
    // A restart: take the run back where the state file left it. Members get
    // a full heartbeat timeout to find this coordinator again (Rejoin).
    const std::vector<uint8_t> raw = read_file(opt_.state_file);
    const std::string text(raw.begin(), raw.end());
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
      members_ = Membership::from_json(j.at("membership"), opt_.membership, MembershipClock::now());
      next_round_ = j.at("next_round").get<uint64_t>();
      const nlohmann::json positions = j.value("partition_position", nlohmann::json::object());
      for (const auto& [k, v] : positions.items()) partition_position_[std::stoull(k)] = v.get<std::string>();
      agreed_ = j.value("agreed", int64_t{0});
      rewinds_ = j.value("rewinds", uint64_t{0});
      disagreed_ = j.value("disagreed", int64_t{0});
      run_settings_ = j.value("run_settings", std::string());
      for (uint64_t id : j.value("banned_nodes", std::vector<uint64_t>{})) banned_ids_.insert(id);
      for (const auto& hex : j.value("banned_keys", std::vector<std::string>{}))
        banned_keys_.insert(parse_public_key(hex, opt_.state_file + ": banned_keys"));
      for (const auto& [k, v] : j.value("node_keys", nlohmann::json::object()).items())
        key_of_[std::stoull(k)] = parse_public_key(v.get<std::string>(), opt_.state_file + ": node_keys");
    } catch (const std::exception& e) {
      fail(opt_.state_file, ": the coordinator's state file is unreadable (", e.what(),
           "); move it aside to start a new run's membership from scratch");
    }
    log(str("restored from ", opt_.state_file, ": ", members_.size(), " node(s), epoch ", members_.epoch(),
            ", last outer step ", members_.last_ring_step(), ", next round ", next_round_));
  }
  const auto [host, port] = split_host_port(opt_.listen, "coordinator listen address");
  port_ = transport_.listen(host, port);
  log(str("coordinator listening on ", host, ":", port_));
  status_ = std::make_shared<RunStatus>(opt_.status_title);
  // A restarted coordinator shows the members it restored until they report.
  for (uint64_t id : members_.ids()) status_->node_back(id, members_.node(id).name, members_.node(id).address);
  if (!opt_.status_listen.empty()) {
    StatusServerOptions so;
    so.listen = opt_.status_listen;
    so.token_file = opt_.status_token_file;
    so.what = "mesh.status_listen";
    so.log = [this](const std::string& m) { log(m); };
    status_server_ = std::make_unique<StatusServer>(std::move(so), status_routes(status_));
  }
}

std::string Coordinator::status_url() const { return status_server_ ? status_server_->url() : std::string(); }

void Coordinator::log(const std::string& m) {
  if (opt_.log) opt_.log(m);
  else std::fprintf(stderr, "[coordinator] %s\n", m.c_str());
}

void Coordinator::send(ConnId conn, const control::Message& m) {
  Frame f;
  f.type = FrameType::control;
  f.payload = control::encode(m);
  try {
    transport_.send(conn, std::move(f), deadline_in(std::chrono::milliseconds(10000)));
  } catch (const Error& e) {
    log(str("could not send ", control::name(m), ": ", e.what()));
  }
}

void Coordinator::persist() { state_dirty_ = !opt_.state_file.empty(); }

void Coordinator::write_state() {
  state_dirty_ = false;
  if (opt_.state_file.empty()) return;
  nlohmann::json positions = nlohmann::json::object();
  for (const auto& [p, pos] : partition_position_) positions[std::to_string(p)] = pos;
  nlohmann::json j = {{"membership", members_.to_json()}, {"next_round", next_round_},
                      {"partition_position", positions}, {"agreed", agreed_.load()}, {"disagreed", disagreed_.load()},
                      {"rewinds", rewinds_}};
  if (!run_settings_.empty()) j["run_settings"] = run_settings_;
  if (!banned_ids_.empty()) {
    j["banned_nodes"] = banned_ids_;
    nlohmann::json keys = nlohmann::json::array();
    for (const PublicKey& pk : banned_keys_) keys.push_back(public_key_hex(pk));
    j["banned_keys"] = keys;
  }
  if (!key_of_.empty()) {
    nlohmann::json keys = nlohmann::json::object();
    for (const auto& [id, pk] : key_of_) keys[std::to_string(id)] = public_key_hex(pk);
    j["node_keys"] = keys;
  }
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(opt_.state_file, text.data(), text.size());
}

std::string Coordinator::who(uint64_t id) const {
  std::string name = members_.contains(id) ? members_.node(id).name : std::string("gone");
  auto k = key_of_.find(id);
  return str("node ", id, " (", name, k != key_of_.end() ? ", " + fingerprint(k->second) : std::string(), ")");
}

std::string Coordinator::bind_key(uint64_t id, ConnId conn) {
  if (banned_ids_.count(id)) return str("node ", id, " was refused for the rest of the run");
  const std::optional<PublicKey> pk = transport_.peer_key(conn);
  if (!pk) return "";  // the shared-secret mode: nodes have no key of their own
  if (banned_keys_.count(*pk))
    return str("key ", fingerprint(*pk), " was refused for the rest of the run (it broke its announcement, or accused "
               "another node falsely: see the coordinator's log)");
  auto k = key_of_.find(id);
  if (k != key_of_.end() && k->second != *pk)
    return str("node ", id, " joined with key ", fingerprint(k->second), ", not ", fingerprint(*pk),
               ": a node id belongs to the key it joined with (restart the node to join under its own key)");
  for (const auto& [other, key] : key_of_)
    if (key == *pk && other != id && members_.contains(other) && conn_of_.count(other))
      return str("key ", fingerprint(*pk), " is already in the run as node ", other,
                 " (two nodes must not share a key file: give each its own with intellect_keygen)");
  key_of_[id] = *pk;
  return "";
}

void Coordinator::evict_revoked_keys() {
  if (opt_.credentials.mode != AuthMode::node_keys || !opt_.credentials.admit) return;
  std::vector<std::pair<uint64_t, std::string>> revoked;
  for (const auto& [id, pk] : key_of_)
    if (members_.contains(id))
      if (std::string why = opt_.credentials.admit(pk); !why.empty()) revoked.emplace_back(id, why);
  for (const auto& [id, why] : revoked) {
    const std::string reason = str("its key was revoked (", why, ")");
    log(str(who(id), " evicted: ", reason));
    drop_node(id, reason);
  }
}

void Coordinator::drop_node(uint64_t id, const std::string& why) {
  if (!members_.contains(id)) return;
  log(str(who(id), " leaves the run: ", why));
  members_.leave(id);
  status_->node_gone(id, false, why);
  for (auto it = link_mbit_.begin(); it != link_mbit_.end();)
    it = it->first.first == id || it->first.second == id ? link_mbit_.erase(it) : std::next(it);
  auto c = conn_of_.find(id);
  if (c != conn_of_.end()) {
    node_of_.erase(c->second);
    transport_.close(c->second, why);
    conn_of_.erase(c);
  }
  persist();
}

void Coordinator::announce(Ring ring) {
  // Only members this coordinator can reach (after a restart, some may not be back yet).
  ring.nodes.erase(std::remove_if(ring.nodes.begin(), ring.nodes.end(),
                                  [&](uint64_t id) { return !conn_of_.count(id); }),
                   ring.nodes.end());
  if (ring.nodes.empty()) return;
  // Around links that do not work; a node that no ring can include this
  // round takes the round's average from a donor, like a late one.
  std::vector<uint64_t> left_out;
  // The direct pattern uses every link between members: none may be bad.
  const LinkSet bad = live_bad_links();
  ring.nodes = opt_.direct ? arrange_direct(ring.nodes, bad, &left_out) : arrange_ring(ring.nodes, bad, &left_out);
  // Then by the link rates nodes measured: the slowest link sets a ring's
  // pace (the direct pattern has no order to choose).
  const bool by_rate = opt_.order_by_rate && !opt_.direct;
  const LinkRates rates = by_rate ? live_link_rates() : LinkRates{};
  if (by_rate) {
    const RingOrder order = order_ring_by_rate(ring.nodes, bad, rates);
    if (order.reordered)
      log(str("outer step ", ring.outer_step, ": ring ordered by measured link rates: slowest link ",
              order.slowest_mbit > 0 ? str(order.slowest_mbit, " Mbit/s") : std::string("not measured yet"),
              " instead of ", order.given_slowest_mbit, " Mbit/s (a direction not measured yet counted at "
              "its reverse's rate)"));
    ring.nodes = order.nodes;
  }
  for (uint64_t id : left_out) {
    log(str("outer step ", ring.outer_step, ": node ", id, " left out of the ",
            opt_.direct ? "round (a link between it and another member fails)" : "ring (links to it fail)",
            "; it will catch up from a donor"));
    status_->node_late(id, ring.outer_step);
    send(conn_of_.at(id), control::Late{ring.outer_step});
  }
  std::map<uint64_t, std::string> why;
  told_outlier_.erase(told_outlier_.begin(), told_outlier_.lower_bound({ring.outer_step - 8, 0}));
  for (uint64_t id : norm_outliers(ring, &why)) {
    ring.nodes.erase(std::remove(ring.nodes.begin(), ring.nodes.end(), id), ring.nodes.end());
    if (!told_outlier_.insert({ring.outer_step, id}).second) continue;  // a ring of one, tried again
    log(str("outer step ", ring.outer_step, ": ", who(id), " left out of the ring: ", why[id],
            "; it will take the round from a donor"));
    send(conn_of_.at(id), control::Late{ring.outer_step});
  }
  if (ring.nodes.empty()) return;
  control::RingAnnounce a;
  a.outer_step = ring.outer_step;
  a.epoch = ring.epoch;
  a.round = next_round_++;
  std::vector<double> accepted;
  for (uint64_t id : ring.nodes) {
    auto an = announced_.find(id);
    const float norm = an != announced_.end() && an->second.outer_step == ring.outer_step ? an->second.norm : -1.0f;
    control::RingMember m;
    m.node_id = id;
    m.address = members_.node(id).address;
    m.norm = norm;
    m.name = members_.node(id).name;
    if (an != announced_.end() && an->second.outer_step == ring.outer_step) m.commitment = an->second.commitment;
    if (auto k = key_of_.find(id); k != key_of_.end()) m.key = k->second;
    a.members.push_back(std::move(m));
    if (norm >= 0) accepted.push_back(norm);
  }
  if (!accepted.empty()) {  // the reference a later ring of one is judged against
    std::sort(accepted.begin(), accepted.end());
    reference_norm_ = accepted[accepted.size() / 2];
  }
  status_->ring_announced(ring.outer_step, a.round, ring.nodes, steps_.active(ring.outer_step));
  steps_.announced(ring, a.round);
  std::string names;
  for (uint64_t id : ring.nodes) names += (names.empty() ? "" : " -> ") + std::to_string(id);
  const double slowest = slowest_link(ring.nodes, rates);
  log(str("outer step ", ring.outer_step, ": ring of ", ring.nodes.size(), " (", names, "), round ", a.round,
          opt_.direct ? std::string("; the direct pattern: every member with every other")
          : ring.nodes.size() < 2 || !opt_.order_by_rate ? std::string()
          : slowest > 0 ? str("; slowest measured link ", slowest, " Mbit/s")
                        : std::string("; no link of it measured yet")));
  // Written before anyone hears of it: a restarted coordinator must know
  // this step's ring was formed.
  write_state();
  for (uint64_t id : ring.nodes) send(conn_of_.at(id), a);
}

std::vector<uint64_t> Coordinator::norm_outliers(const Ring& ring, std::map<uint64_t, std::string>* why) const {
  std::map<uint64_t, double> norms;
  for (uint64_t id : ring.nodes) {
    auto an = announced_.find(id);
    if (an != announced_.end() && an->second.outer_step == ring.outer_step && an->second.norm >= 0)
      norms[id] = an->second.norm;
  }
  NormJudgement j = judge_norms(norms, opt_.norm_outlier_factor, reference_norm_, members_.size());
  *why = std::move(j.why);
  return j.left_out;
}

void Coordinator::ban(uint64_t id, const std::string& why) {
  if (banned_ids_.count(id)) return;
  banned_ids_.insert(id);
  auto k = key_of_.find(id);
  if (k != key_of_.end()) banned_keys_.insert(k->second);
  log(str(who(id), " ", why));
  auto c = conn_of_.find(id);
  if (c != conn_of_.end()) send(c->second, control::Refused{why});
  drop_node(id, why);
  persist();
}

void Coordinator::judge_accusation(uint64_t accuser, const control::RingFailed& f, const Ring& ring,
                                   size_t accuser_rank, MembershipTime now) {
  const auto accused_key = key_of_.find(f.accused);
  if (accused_key == key_of_.end() || !key_of_.count(accuser)) {
    ban(f.accused, str("sent more than its announced pseudo-gradient norm allows (caught by its ring successor, ",
                       who(accuser), ": ", f.reason,
                       "; on its word: without per-node keys nothing can be proven); refused for the rest of the run"));
    return;
  }
  // Judged against what the accused announced for that very step; without
  // it (a coordinator restarted since) nothing can be judged either way.
  const auto held = announced_.find(f.accused);
  const bool known = held != announced_.end() && held->second.outer_step == f.outer_step;
  if (f.evidence.empty() || !known) {
    bad_links_[std::minmax(accuser, f.accused)] = now + opt_.bad_link_ttl;
    log(str(who(accuser), " accuses ring member ", who(f.accused),
            f.evidence.empty() ? " without evidence (" : " with evidence this coordinator cannot judge (",
            f.reason, f.evidence.empty() ? "" : "; it holds no announcement of that node for that step",
            "): nobody is refused on one node's word; rings avoid their link for ", opt_.bad_link_ttl.count(), " ms"));
    return;
  }
  EvidenceContext ctx;
  ctx.round = f.round;
  ctx.accuser_rank = static_cast<int>(accuser_rank);
  ctx.world = static_cast<int>(ring.nodes.size());
  for (uint64_t n : ring.nodes) {
    auto a = announced_.find(n);
    ctx.norms.push_back(a != announced_.end() && a->second.outer_step == f.outer_step ? a->second.norm : -1.0);
  }
  ctx.slack = RingOptions{}.norm_slack;
  ctx.sparse_slack = SparseRingOptions{}.norm_slack;
  ctx.accused_rank = static_cast<int>(std::find(ring.nodes.begin(), ring.nodes.end(), f.accused) - ring.nodes.begin());
  for (uint64_t n : ring.nodes) {
    auto a = announced_.find(n);
    ctx.commitments.push_back(a != announced_.end() && a->second.outer_step == f.outer_step ? a->second.commitment
                                                                                             : std::array<uint8_t, 32>{});
    auto k = key_of_.find(n);
    ctx.keys.push_back(k != key_of_.end() ? k->second : PublicKey{});
  }
  const EvidenceVerdict v = judge_ring_evidence(f.evidence, accused_key->second, ctx);
  if (v.holds)
    ban(f.accused, str(v.altered ? "sent another node's chunk altered" : "broke its announcement (norm or commitment)",
                       ", shown by the evidence of ring member ", who(accuser), ": ", v.why,
                       "; refused for the rest of the run"));
  else
    ban(accuser, str("accused ring member ", who(f.accused),
                     " of breaking its announcement, with evidence that does not hold (", v.why,
                     "): a false accusation; refused for the rest of the run"));
}

LinkRates Coordinator::live_link_rates() const {
  LinkRates rates;
  for (const auto& [link, mbit] : link_mbit_)
    if (members_.contains(link.first) && members_.contains(link.second)) rates[link] = mbit;
  return rates;
}

LinkSet Coordinator::live_bad_links() {
  const MembershipTime now = MembershipClock::now();
  LinkSet live;
  for (auto it = bad_links_.begin(); it != bad_links_.end();) {
    if (it->second <= now || !members_.contains(it->first.first) || !members_.contains(it->first.second)) {
      it = bad_links_.erase(it);
      continue;
    }
    live.insert(it->first);
    ++it;
  }
  return live;
}

namespace {
bool ring_has_link(const Ring& r, std::pair<uint64_t, uint64_t> link) {
  const size_t n = r.nodes.size();
  if (n < 2) return false;
  for (size_t i = 0; i < n; ++i)
    if (std::pair<uint64_t, uint64_t>(std::minmax(r.nodes[i], r.nodes[(i + 1) % n])) == link) return true;
  return false;
}
}  // namespace

// One message from a connection, to the handler for its kind. Join and
// Rejoin come from connections not yet bound to a node; everything else
// only from a bound one.
void Coordinator::handle(ConnId conn, const control::Message& msg, MembershipTime now) {
  auto known = node_of_.find(conn);
  const bool bound = known != node_of_.end();
  if (const auto* j = std::get_if<control::Join>(&msg)) return on_join(conn, bound, *j, now);
  if (const auto* rj = std::get_if<control::Rejoin>(&msg)) return on_rejoin(conn, bound, *rj, now);
  if (!bound) {
    send(conn, control::Refused{"join first"});
    transport_.close(conn, "spoke before joining");
    return;
  }
  const uint64_t id = known->second;
  if (const auto* h = std::get_if<control::Heartbeat>(&msg)) {
    on_heartbeat(conn, id, *h, now);
  } else if (std::get_if<control::Leave>(&msg)) {
    drop_node(id, "said goodbye");
  } else if (const auto* dr = std::get_if<control::DonorRequest>(&msg)) {
    on_donor_request(conn, id, *dr);
  } else if (const auto* r = std::get_if<control::Ready>(&msg)) {
    on_ready(conn, id, *r, now);
  } else if (const auto* f = std::get_if<control::RingFailed>(&msg)) {
    on_ring_failed(id, *f, now);
  } else if (const auto* d = std::get_if<control::RoundDone>(&msg)) {
    on_round_done(conn, id, *d);
  } else if (const auto* o = std::get_if<control::OuterHash>(&msg)) {
    on_outer_hash(id, *o);
  }
}

void Coordinator::on_heartbeat(ConnId conn, uint64_t id, const control::Heartbeat& h, MembershipTime now) {
  if (h.node_id != id) return send(conn, control::Refused{"heartbeat for another node"});
  members_.heartbeat(id, now);
  members_.note_held(id, h.held_step);
  if (h.status) status_->node_status(id, *h.status);
}

// What a node hears when it joins or comes back: who it is, the run's
// position, and how often to beat.
control::Welcome Coordinator::welcome_for(const NodeRecord& n) const {
  control::Welcome w;
  w.node_id = n.id;
  w.partition = n.partition;
  w.epoch = members_.epoch();
  w.outer_step = std::max<int64_t>(0, members_.last_ring_step());
  w.rewinds = rewinds_;
  w.heartbeat_ms = static_cast<uint32_t>(opt_.heartbeat_interval.count());
  w.timeout_ms = static_cast<uint32_t>(opt_.membership.heartbeat_timeout.count());
  return w;
}

void Coordinator::on_join(ConnId conn, bool already, const control::Join& j, MembershipTime now) {
  if (already) return send(conn, control::Refused{"this connection already joined"});
  // Settings are checked before the node is registered: against the run's,
  // or, from the run's first node to give any, that they are settings at all.
  if (!j.settings.empty()) {
    const std::string differ = !run_settings_.empty()              ? run_settings_difference(run_settings_, j.settings)
                               : run_settings_valid(j.settings) ? ""
                                                                 : "they are not a JSON object of at most 8 levels";
    if (!differ.empty()) {
      // The remedy first: a long list is clipped on the wire (the
      // coordinator's log keeps all of it).
      const std::string why = str("settings differ from the run's (every node uses the same model.* and diloco.*; "
                                  "set them as the run has them and restart the node): ", differ);
      send(conn, control::Refused{why});
      transport_.close(conn, "settings differ from the run's");
      return log(str("refused a join from ", transport_.peer(conn), " (", j.name, "): ", differ));
    }
  }
  const Registration r = members_.join(j.name, j.address, now, j.held_step);
  if (std::string refused = bind_key(r.id, conn); !refused.empty()) {
    members_.leave(r.id);
    send(conn, control::Refused{refused});
    transport_.close(conn, refused);
    return log(str("refused a join from ", transport_.peer(conn), ": ", refused));
  }
  members_.set_state_address(r.id, j.state_address);
  if (run_settings_.empty() && !j.settings.empty()) {
    run_settings_ = j.settings;
    log(str("the run's settings are those of ", j.name, ", its first node to give any: ", j.settings));
  }
  conn_of_[r.id] = conn;
  node_of_[conn] = r.id;
  control::Welcome w = welcome_for(members_.node(r.id));
  w.epoch = r.epoch;
  if (!members_.node(r.id).synced) {
    // A run in progress: the joiner streams the state from a healthy node
    // while everyone else keeps training.
    if (std::optional<uint64_t> d = members_.pick_donor({r.id})) {
      w.donor_id = *d;
      w.donor_address = members_.node(*d).state_address;
      for (uint64_t s : members_.pick_donors({r.id, *d}, control::kMaxStripeDonors))
        w.stripe_donors.push_back({s, members_.node(s).state_address});
    }
  }
  auto pos = partition_position_.find(r.partition);
  if (pos != partition_position_.end()) w.data_position = pos->second;
  {  // the status page and /metrics name a keyed node by its key too
    auto k = key_of_.find(r.id);
    status_->node_joined(r.id, k != key_of_.end() ? j.name + " " + fingerprint(k->second) : j.name, j.address,
                         w.donor_id);
  }
  log(str(who(r.id), " at ", j.address, " joined: partition ", r.partition, ", ",
          members_.size(), " node(s)",
          w.donor_id ? str(", fetches the state of outer step ", w.outer_step, " from node ", w.donor_id) : ""));
  send(conn, w);
  persist();
}

void Coordinator::on_rejoin(ConnId conn, bool already, const control::Rejoin& rj, MembershipTime now) {
  if (already) return send(conn, control::Refused{"this connection already joined"});
  if (!members_.contains(rj.node_id)) {
    send(conn, control::Refused{str("node ", rj.node_id, " is not a member of this run (evicted while away, or "
                                    "the coordinator lost its state): restart the node to join again")});
    transport_.close(conn, "unknown node");
    return;
  }
  if (std::string refused = bind_key(rj.node_id, conn); !refused.empty()) {
    send(conn, control::Refused{refused});
    transport_.close(conn, refused);
    return log(str("refused a rejoin from ", transport_.peer(conn), ": ", refused));
  }
  auto old = conn_of_.find(rj.node_id);
  if (old != conn_of_.end() && old->second != conn) {
    node_of_.erase(old->second);
    transport_.close(old->second, "replaced by a new connection");
  }
  conn_of_[rj.node_id] = conn;
  node_of_[conn] = rj.node_id;
  members_.heartbeat(rj.node_id, now);
  members_.note_held(rj.node_id, rj.held_step);
  const NodeRecord& n = members_.node(rj.node_id);
  status_->node_back(n.id, n.name, n.address);
  log(str("node ", n.id, " (", n.name, ") is back"));
  send(conn, welcome_for(n));
}

void Coordinator::on_donor_request(ConnId conn, uint64_t id, const control::DonorRequest& dr) {
  control::DonorAssign a;
  // Not itself, not the one that failed it, and none it cannot reach.
  std::set<uint64_t> exclude = {id, dr.exclude};
  for (const auto& [a_id, b_id] : live_bad_links())
    if (a_id == id || b_id == id) exclude.insert(a_id == id ? b_id : a_id);
  if (std::optional<uint64_t> d = members_.pick_donor(exclude)) {
    a.donor_id = *d;
    a.donor_address = members_.node(*d).state_address;
  }
  log(str("node ", id, " asks for another donor than node ", dr.exclude, ": ",
          a.donor_id ? str("node ", a.donor_id) : std::string("none available")));
  send(conn, a);
}

void Coordinator::on_ready(ConnId conn, uint64_t id, const control::Ready& r, MembershipTime now) {
  members_.note_held(id, r.outer_step - 1);
  const OuterStepState* active = steps_.active(r.outer_step) ? steps_.find(r.outer_step) : nullptr;
  const bool in_active =
      active && std::find(active->ring.nodes.begin(), active->ring.nodes.end(), id) != active->ring.nodes.end();
  if (r.outer_step <= members_.last_ring_step() && in_active) return;  // a repeat after a reconnect
  // Ready for step s: s − 1 is done. Nodes still waiting on an older step
  // (after a restart, its ring may have completed without them) catch up.
  for (const auto& [behind, their] : members_.note_step_done(r.outer_step)) {
    auto c = conn_of_.find(behind);
    log(str("node ", behind, " waits on outer step ", their, ", which is done; it will catch up from a donor"));
    status_->node_late(behind, their);
    if (c != conn_of_.end()) send(c->second, control::Late{their});
  }
  if (r.outer_step <= members_.last_ring_step()) {
    // Its ring formed without it (it was still catching up): it takes that
    // round's average from a donor instead. Nobody waited for it.
    log(str("node ", id, " is late for outer step ", r.outer_step, "; it will catch up from a donor"));
    if (!r.data_position.empty()) partition_position_[members_.node(id).partition] = r.data_position;
    status_->node_late(id, r.outer_step);
    send(conn, control::Late{r.outer_step});
    return;
  }
  members_.ready(id, r.outer_step, now);
  status_->node_state(id, "waiting for ring");
  if (!r.data_position.empty()) partition_position_[members_.node(id).partition] = r.data_position;
  if (r.link_to != 0 && r.link_to != id && r.link_mbit > 0 && members_.contains(r.link_to))
    link_mbit_[{id, r.link_to}] = r.link_mbit;
  announced_[id] = Announced{r.outer_step, r.norm, r.commitment};
  persist();
}

void Coordinator::on_ring_failed(uint64_t id, const control::RingFailed& f, MembershipTime now) {
  std::optional<std::pair<uint64_t, uint64_t>> new_link;
  // Only a peer that is alive by its heartbeats: a dial to a node that is
  // stopped or dead fails too, and eviction deals with that one.
  if (f.unreachable != 0 && f.unreachable != id && members_.contains(f.unreachable) &&
      now - members_.node(f.unreachable).last_seen < 2 * opt_.heartbeat_interval) {
    const std::pair<uint64_t, uint64_t> link = std::minmax(id, f.unreachable);
    if (!live_bad_links().count(link)) new_link = link;
    bad_links_[link] = now + opt_.bad_link_ttl;
    log(str("node ", id, " cannot reach node ", f.unreachable, ": rings avoid that link for ",
            opt_.bad_link_ttl.count(), " ms"));
  }
  // Accusations count only from a member of the round's ring against its
  // own predecessor there: nobody else saw that node's messages. A sparse
  // accusation with evidence, between two keyed members, may name any other
  // member: its chunks travel the whole ring under their author's signature.
  // So may the direct pattern's (every member hears every other): any
  // accusation in a run of the direct pattern, and with keys any accusation
  // whose evidence is a direct contribution or a leaf message (both signed
  // by the accused, so they prove themselves whoever hands them over).
  const OuterStepState* step = steps_.active(f.outer_step) ? steps_.find(f.outer_step) : nullptr;
  if (f.accused != 0 && step && f.round == step->round) {
    const auto& nodes = step->ring.nodes;
    auto me = std::find(nodes.begin(), nodes.end(), id);
    if (me != nodes.end() && nodes.size() > 1) {
      const size_t i = static_cast<size_t>(me - nodes.begin());
      const bool member = f.accused != id && std::find(nodes.begin(), nodes.end(), f.accused) != nodes.end();
      const bool keyed = key_of_.count(id) && key_of_.count(f.accused);
      const bool self_proving = !f.evidence.empty() && (is_sparse_message(f.evidence[0]) ||
                                                        is_leaf_message(f.evidence[0]) ||
                                                        is_direct_message(f.evidence[0]));
      if (nodes[(i + nodes.size() - 1) % nodes.size()] == f.accused || (member && keyed && self_proving) ||
          (member && opt_.direct))
        judge_accusation(id, f, step->ring, i, now);
    }
  }
  // Re-formed a moment later, from run(), not here (OuterSteps): the
  // connection-closed events of nodes that died with the round need that
  // moment to arrive, and this loop must not sleep meanwhile. Other members
  // of the same round report the same failure: once is enough.
  switch (steps_.failed(f.outer_step, f.round, now)) {
    case OuterSteps::Failure::no_ring:
      return;
    case OuterSteps::Failure::committed:
      // Only a node that said it completed the round can still be in it
      // now: it holds the round, as every other member does.
      log(str(who(id), " reports outer step ", f.outer_step, " round ", f.round,
              " failed after it was committed (every member still in the run had completed it): ignored"));
      return;
    case OuterSteps::Failure::stale: {
      // Already re-formed; but if the newer ring runs over the link just
      // found broken, it would fail the same way: replace it now.
      const Ring current = steps_.find(f.outer_step)->ring;
      if (new_link && ring_has_link(current, *new_link)) {
        log(str("outer step ", f.outer_step, ": the current ring uses that link; re-forming it"));
        announce(members_.reform_ring(current, {}));
      }
      return;
    }
    case OuterSteps::Failure::scheduled:
    case OuterSteps::Failure::repeated:
      log(str("node ", id, " reports outer step ", f.outer_step, " round ", f.round, " failed: ", f.reason));
      return;
  }
}

void Coordinator::on_round_done(ConnId conn, uint64_t id, const control::RoundDone& d) {
  if (d.node_id != id) return send(conn, control::Refused{"round-done for another node"});
  switch (steps_.completed(d.outer_step, d.round, id)) {
    case OuterSteps::Completion::recorded:
      commit_completed_rounds();
      return;
    case OuterSteps::Completion::committed:  // said again after a reconnect: the commit may have been lost
      send(conn, control::RoundCommit{d.outer_step, d.round});
      return;
    case OuterSteps::Completion::stale:    // it hears of the ring that replaces the round, or was told
    case OuterSteps::Completion::no_ring:  // the step was given up, rewound, or (a restart) never heard of
      return;
  }
}

void Coordinator::commit_completed_rounds() {
  for (const OuterSteps::Commit& c : steps_.take_committed([&](uint64_t n) { return members_.contains(n); })) {
    size_t here = 0;
    for (uint64_t n : c.ring.nodes) here += members_.contains(n);
    log(str("outer step ", c.step, " round ", c.round, " committed: every member still in the run completed it (",
            here, " of ", c.ring.nodes.size(), ")"));
    for (uint64_t n : c.ring.nodes)
      if (auto conn = conn_of_.find(n); conn != conn_of_.end()) send(conn->second, control::RoundCommit{c.step, c.round});
  }
}

void Coordinator::on_outer_hash(uint64_t id, const control::OuterHash& o) {
  if (!steps_.active(o.outer_step)) return;
  const HashCheck c = members_.report_hash(steps_.find(o.outer_step)->ring, id, o.hash);
  members_.note_held(id, o.outer_step);
  if (!c.complete) return;
  status_->outer_done(o.outer_step, c.agree ? "agreed" : "diverged");
  if (c.agree) {
    ++agreed_;
    log(str("outer step ", o.outer_step, ": all ", c.hashes.size(), " nodes agree (hash ", o.hash, ")"));
  } else {
    ++disagreed_;
    std::string list;
    for (const auto& [n, h] : c.hashes) list += str(" node ", n, "=", h);
    log(str("OUTER PARAMETERS DIVERGED at outer step ", o.outer_step, ":", list));
  }
  steps_.done(o.outer_step);
  persist();  // the agreement counts survive a restart
}

void Coordinator::check_stranded(MembershipTime now) {
  const int64_t newest = members_.last_ring_step();
  const NewestHeld newest_held = members_.newest_held();
  // Nothing held: nobody to go on from anyway; unknown: a member not heard
  // from since a restart may hold it.
  bool alive = newest < 0 || newest_held.held.at_least(newest) || newest_held.held.kind == HeldState::Kind::nothing;
  if (!alive && steps_.active(newest)) {
    // Still being computed by a ring whose members are all here?
    const Ring& r = steps_.find(newest)->ring;
    alive = !r.nodes.empty() &&
            std::all_of(r.nodes.begin(), r.nodes.end(), [&](uint64_t id) { return members_.contains(id); });
  }
  const int64_t held = newest_held.held.step;
  const uint64_t holder = newest_held.node;
  if (alive) {
    stranded_since_.reset();
    return;
  }
  if (!stranded_since_) {
    stranded_since_ = now;
    log(str("no live node holds outer step ", newest, " (the newest one held is ", held, ", by node ", holder,
            "); the run goes back to it unless a holder of ", newest, " is heard from within ",
            opt_.rewind_after.count(), " ms"));
    return;
  }
  if (now - *stranded_since_ < opt_.rewind_after) return;
  stranded_since_.reset();
  // Everything after `held` is lost with the nodes that had it: the run
  // repeats those outer steps (their inner steps' data is not read again).
  ++rewinds_;
  members_.rewind(held);
  steps_.rewind(held);
  // The newer steps' norms say nothing of the steps the run repeats (early
  // in training pseudo-gradients are much larger): a node alone would be
  // judged against them and left out of every ring (norm_outliers.h).
  reference_norm_ = 0.0;
  log(str("RUN REWOUND (", rewinds_, "): every holder of outer step ", newest, " is gone; the run goes on from outer step ",
          held, ", held by node ", holder));
  status_->rewound(held, rewinds_);
  for (const auto& [id, conn] : conn_of_) send(conn, control::Rewound{held, rewinds_});
  write_state();
}

void Coordinator::dispatch(const Message& m) {
  try {
    if (m.frame.type != FrameType::control && m.frame.type != FrameType::evidence)
      fail("a ", frame_type_name(m.frame.type), " frame, where the coordinator takes control messages only");
    control::Message msg = control::decode(m.frame.payload, transport_.peer(m.conn));
    if (m.frame.type == FrameType::evidence && !std::holds_alternative<control::RingFailed>(msg))
      fail("an evidence frame that holds a ", control::name(msg), " message rather than a ring-failed one");
    handle(m.conn, std::move(msg), MembershipClock::now());
  } catch (const Error& e) {
    log(str("dropping ", transport_.peer(m.conn), ": ", e.what()));
    if (node_of_.count(m.conn)) drop_node(node_of_.at(m.conn), e.what());
    else transport_.close(m.conn, e.what());
  }
}

void Coordinator::connection_closed(ConnId conn, const std::string& reason) {
  // Frames the node sent before closing (its last hash, its goodbye) count,
  // those still being opened on the transport's openers too: the closed
  // event can overtake them, and a recv that does not wait for them missed
  // a node's last hash (the coordinator then dropped the node and refused
  // the hash). recv returns as soon as they are in or the connection has
  // nothing left; the bound only guards against a stuck opener.
  try {
    while (std::optional<Message> m = transport_.recv(conn, deadline_in(std::chrono::milliseconds(1000)))) dispatch(*m);
  } catch (const Error&) {  // inbox empty and the connection closed
  }
  if (node_of_.count(conn)) drop_node(node_of_.at(conn), "connection lost: " + reason);
  node_of_.erase(conn);
}

// Rings reported failed whose moment has passed: re-formed without every
// node that is gone by now, or given up after max_retries.
void Coordinator::reform_failed_rings(MembershipTime now) {
  for (const OuterSteps::Due& due : steps_.take_due(now)) {
    if (due.give_up) {
      log(str("outer step ", due.step, ": giving up after ", opt_.max_retries, " retries"));
      for (uint64_t n : due.ring.nodes)
        if (conn_of_.count(n)) send(conn_of_.at(n), control::Refused{"all-reduce failed too many times"});
      continue;
    }
    std::vector<uint64_t> lost;
    for (uint64_t n : due.ring.nodes)
      if (!members_.contains(n)) lost.push_back(n);
    Ring again = members_.reform_ring(due.ring, lost);
    if (!again.nodes.empty()) announce(again);
  }
}

void Coordinator::run(const std::atomic<bool>& stop) {
  // Silence is only judged while this loop has been listening: after a stall
  // of this thread (a slow fsync of the state file, a starved VM) or of the
  // whole process, the heartbeats sent meanwhile are still in the inbox or
  // the socket, and the nodes that sent them are not silent.
  const auto stall = std::max<std::chrono::milliseconds>(opt_.heartbeat_interval, std::chrono::milliseconds(250));
  MembershipTime last_turn = MembershipClock::now(), listening_since = last_turn;
  while (!stop.load()) {
    if (opt_.on_turn) opt_.on_turn();
    std::optional<TransportEvent> ev;
    while ((ev = transport_.next_event(deadline_in(std::chrono::milliseconds(0)))))
      if (ev->kind == TransportEvent::Kind::closed) connection_closed(ev->conn, ev->reason);
    // Everything that has arrived, not one message per turn: a node's
    // heartbeat must never wait in the inbox while it is judged silent.
    constexpr int kMaxPerTurn = 4096;
    int handled = 0;
    Deadline wait = deadline_in(std::chrono::milliseconds(20));
    while (handled < kMaxPerTurn) {
      std::optional<Message> m = transport_.recv(kAnyConn, wait);
      if (!m) break;
      dispatch(*m);
      ++handled;
      wait = deadline_in(std::chrono::milliseconds(0));
    }
    const MembershipTime now = MembershipClock::now();
    if (now - last_turn > stall) {
      log(str("this loop stalled for ", std::chrono::duration_cast<std::chrono::milliseconds>(now - last_turn).count(),
              " ms; nobody is judged silent until it has listened for ", 2 * stall.count(), " ms"));
      listening_since = now;
    }
    last_turn = now;
    const bool may_evict = handled < kMaxPerTurn && now - listening_since >= 2 * stall;
    for (uint64_t id : may_evict ? members_.evict_silent(now) : std::vector<uint64_t>{}) {
      log(str(who(id), " evicted: no heartbeat for ", opt_.membership.heartbeat_timeout.count(), " ms"));
      status_->node_gone(id, true, str("no heartbeat for ", opt_.membership.heartbeat_timeout.count(), " ms"));
      auto c = conn_of_.find(id);
      if (c != conn_of_.end()) {
        node_of_.erase(c->second);
        transport_.close(c->second, "evicted");
        conn_of_.erase(c);
      }
      persist();
    }
    evict_revoked_keys();
    check_stranded(MembershipClock::now());
    reform_failed_rings(MembershipClock::now());
    // A member gone without a word no longer holds its round's commit up.
    commit_completed_rounds();
    // Rings for every outer step some node is ready for.
    std::set<int64_t> steps;
    for (uint64_t id : members_.ids())
      if (const std::optional<int64_t> s = members_.node(id).ready_for) steps.insert(*s);
    for (int64_t s : steps)
      if (s >= 0 && !steps_.active(s))
        if (std::optional<Ring> r = members_.try_form_ring(s, MembershipClock::now())) announce(*r);
    // Once per turn, not once per message: each write is two fsyncs, and a
    // burst of Ready messages would otherwise stall this loop for seconds.
    if (state_dirty_) write_state();
  }
  if (state_dirty_) write_state();
}

}  // namespace intellect
