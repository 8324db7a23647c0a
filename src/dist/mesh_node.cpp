#include "dist/mesh_node.h"

#include "dist/contribution_check.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#include <csignal>
#include <cstdlib>

#include "dist/link_emulation.h"
#include "dist/round_codec.h"
#include "dist/shard_plan.h"
#include "util/error.h"

namespace intellect {

namespace {

// Fault injection for the swarm tests: INTELLECT_MESH_TEST_KILL="<name>:<outer step>"
// kills this process (SIGKILL, no goodbye) once it holds that step's ring,
// i.e. in the middle of the all-reduce as its neighbours see it.
void test_kill_point(const std::string& name, int64_t outer_step) {
  const char* spec = std::getenv("INTELLECT_MESH_TEST_KILL");
  if (spec && std::string(spec) == name + ":" + std::to_string(outer_step)) ::raise(SIGKILL);
}

void log_to(const std::function<void(const std::string&)>& log, const std::string& m) {
  if (log) log(m);
  else std::fprintf(stderr, "[mesh] %s\n", m.c_str());
}

// The ring's two links over authenticated transport connections: data frames
// to the next node, from the previous one. (A WAN link for tests and
// benchmarks decorates it: link_emulation.h.)
class TransportRingLink final : public RingLink {
 public:
  TransportRingLink(Transport& t, ConnId next, ConnId prev) : t_(t), next_(next), prev_(prev) {}

  void send_to_next(std::span<const uint8_t> msg, RingClock::time_point deadline) override {
    Frame f;
    f.type = FrameType::data;
    f.payload.assign(msg.begin(), msg.end());
    t_.send(next_, std::move(f), deadline);
  }
  std::vector<uint8_t> recv_from_prev(RingClock::time_point deadline) override {
    std::optional<Message> m = t_.recv(prev_, deadline);
    if (!m) fail("ring: no message from the previous node before the deadline");
    if (m->frame.type != FrameType::data) fail("ring: the previous node sent a ", frame_type_name(m->frame.type),
                                               " frame where ring data was expected");
    return std::move(m->frame.payload);
  }
  void abort() noexcept override {
    try {
      t_.close(next_, "ring round aborted");
      t_.close(prev_, "ring round aborted");
    } catch (...) {
    }
  }

 private:
  Transport& t_;
  ConnId next_, prev_;
};

}  // namespace

std::pair<std::string, uint16_t> split_host_port(const std::string& s, const std::string& what) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    fail(what, ": expected host:port, got '", s, "'");
  const std::string host = s.substr(0, colon), port = s.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (*end != '\0' || p < 0 || p > 65535) fail(what, ": bad port in '", s, "'");
  return {host, static_cast<uint16_t>(p)};
}

MeshNode::MeshNode(MeshNodeOptions options)
    : opt_(std::move(options)), transport_(TransportOptions{opt_.credentials, std::chrono::milliseconds(10000),
                                                            opt_.message_timeout, size_t(128) << 20,
                                                            size_t(256) << 20, 64, opt_.log}) {
  const auto [lhost, lport] = split_host_port(opt_.listen, "mesh.listen");
  const uint16_t port = transport_.listen(lhost, lport);
  address_ = lhost + ":" + std::to_string(port);
  if (opt_.serve_state) state_ = std::make_unique<StateServer>(opt_.credentials, lhost, opt_.log);
  if (state_ && opt_.rounds_applied_late) state_->set_snapshot_lag(1);
  const auto [chost, cport] = split_host_port(opt_.coordinator, "mesh.coordinator");
  // The coordinator may be restarting: keep dialling until the join timeout.
  const Deadline join_deadline = deadline_in(opt_.join_timeout);
  for (;;) {
    try {
      coord_ = transport_.connect(chost, cport, join_deadline);
      break;
    } catch (const Error& e) {
      if (MeshClock::now() + std::chrono::milliseconds(300) > join_deadline)
        fail("cannot reach the coordinator at ", opt_.coordinator, " within ", opt_.join_timeout.count(),
             " ms: ", e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
  send_control(coord_, control::Join{opt_.name, address_, 1, state_ ? state_->address() : "", held_step_.load()});
  const control::Message reply = recv_control(deadline_in(opt_.join_timeout));
  if (const auto* r = std::get_if<control::Refused>(&reply)) fail("the coordinator refused to let this node join: ", r->reason);
  const auto* w = std::get_if<control::Welcome>(&reply);
  if (!w) fail("the coordinator answered the join with '", control::name(reply), "'");
  welcome_ = *w;
  rewinds_ = welcome_.rewinds;
  donor_id_ = welcome_.donor_id;
  donor_address_ = welcome_.donor_address;
  log_to(opt_.log, str("joined the run as node ", welcome_.node_id, " (data partition ", welcome_.partition,
                       ", epoch ", welcome_.epoch, "), listening for peers on ", address_));
  heartbeat_ = std::thread([this] {
    const auto every = std::chrono::milliseconds(welcome_.heartbeat_ms);
    // A node that left the run (finished, or evicted and told so) beats no
    // more, and a send that fails because leave() just closed the
    // connection is no failure worth a line.
    while (!stop_.load() && !left_.load()) {
      const ConnId c = coord_.load();
      try {
        control::Heartbeat beat{welcome_.node_id, held_step_.load(), std::nullopt};
        {
          std::lock_guard<std::mutex> lock(status_mu_);
          beat.status = status_;
        }
        send_control(c, beat);
      } catch (const Error& e) {
        if (left_.load()) return;
        log_to(opt_.log, str("heartbeat failed: ", e.what()));
        if (!transport_.is_open(c)) {
          try {
            reconnect(c);
          } catch (const EvictedFromRun& e2) {
            // No point beating for a run that no longer counts this node:
            // the main thread sees the flag at its next wait and ends.
            log_to(opt_.log, str("evicted: ", e2.what()));
            evicted_ = true;
            return;
          } catch (const Error& e2) {
            log_to(opt_.log, str("could not reach the coordinator again: ", e2.what()));
          }
        }
      }
      for (auto t = std::chrono::milliseconds(0); t < every && !stop_.load(); t += std::chrono::milliseconds(50))
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

MeshNode::~MeshNode() {
  try {
    leave("node shutting down");
  } catch (...) {
  }
  stop_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
  if (snapshot_worker_.joinable()) snapshot_worker_.join();  // before the server it publishes to goes
}

void MeshNode::leave(const std::string& reason) {
  if (left_.exchange(true)) return;
  const ConnId c = coord_.load();
  try {  // best effort: a coordinator that is away learns it from the timeout
    send_control(c, control::Leave{welcome_.node_id, reason});
  } catch (const Error& e) {
    log_to(opt_.log, str("could not say goodbye to the coordinator: ", e.what()));
  }
  transport_.close(c, "left the run");
}

void MeshNode::reconnect(ConnId stale) {
  std::lock_guard<std::mutex> lock(reconnect_mu_);
  if (coord_.load() != stale) return;  // another thread got there first
  log_to(opt_.log, "lost the coordinator; reconnecting");
  const auto [chost, cport] = split_host_port(opt_.coordinator, "mesh.coordinator");
  // As long as a round may take: a coordinator restarted by hand takes a while.
  const Deadline deadline = deadline_in(opt_.round_timeout);
  std::string why = "no attempt";
  while (MeshClock::now() < deadline && !stop_.load() && !cancel_.load()) {
    ConnId c = 0;
    try {
      c = transport_.connect(chost, cport, deadline_in(std::chrono::milliseconds(2000)));
      send_control(c, control::Rejoin{welcome_.node_id, opt_.name, address_, state_ ? state_->address() : "",
                                      held_step_.load()});
      std::optional<Message> m = transport_.recv(c, deadline_in(std::chrono::milliseconds(5000)));
      if (!m) fail("no answer to the rejoin");
      const control::Message reply = control::decode(m->frame.payload, "the coordinator");
      if (const auto* r = std::get_if<control::Refused>(&reply))
        throw EvictedFromRun(str("the coordinator no longer takes this node: ", r->reason));
      const auto* back = std::get_if<control::Welcome>(&reply);
      if (!back) fail("the coordinator answered the rejoin with '", control::name(reply), "'");
      if (back->rewinds > rewinds_.load()) note_rewind(back->outer_step, back->rewinds);
      transport_.close(stale, "replaced");
      coord_ = c;
      log_to(opt_.log, "back with the coordinator");
      if (pending_) send_control(c, *pending_);
      return;
    } catch (const EvictedFromRun&) {
      if (c) transport_.close(c, "evicted");
      throw;
    } catch (const Error& e) {
      why = e.what();
      if (c) transport_.close(c, "rejoin failed");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  fail("the coordinator at ", opt_.coordinator, " did not come back within ", opt_.round_timeout.count(),
       " ms (last error: ", why, ")");
}

void MeshNode::send_coordinator(const control::Message& m) {
  const ConnId c = coord_.load();
  try {
    send_control(c, m);
  } catch (const Error&) {
    if (transport_.is_open(c)) throw;
    reconnect(c);
    send_control(coord_.load(), m);
  }
}

void MeshNode::send_control(ConnId conn, const control::Message& m) {
  Frame f;
  f.type = FrameType::control;
  f.payload = control::encode(m);
  transport_.send(conn, std::move(f), deadline_in(opt_.message_timeout));
}

void MeshNode::note_rewind(int64_t outer_step, uint64_t rewinds) {
  std::lock_guard<std::mutex> lock(rewind_mu_);
  if (rewinds <= rewinds_.load()) return;
  rewinds_ = rewinds;
  rewound_to_ = outer_step;
  log_to(opt_.log, str("the run went back to outer step ", outer_step, " (rewind ", rewinds,
                       "): every node holding a newer one is gone"));
}

void MeshNode::throw_if_rewound() {
  std::optional<int64_t> to;
  {
    std::lock_guard<std::mutex> lock(rewind_mu_);
    to.swap(rewound_to_);
  }
  if (to) throw RunRewound(*to, str("the run went back to outer step ", *to));
}

bool MeshNode::note_if_rewound(const control::Message& m) {
  const auto* rw = std::get_if<control::Rewound>(&m);
  if (rw) note_rewind(rw->outer_step, rw->rewinds);
  return rw != nullptr;
}

control::Message MeshNode::recv_control(Deadline deadline) {
  // A rewind concerns whatever the caller waits for: it is thrown at the top
  // of the next turn (after the deadline check, so it is never lost).
  for (;;) {
    if (evicted_.load()) throw EvictedFromRun("the coordinator no longer counts this node");
    throw_if_cancelled("waiting for the coordinator");
    throw_if_rewound();
    const ConnId c = coord_.load();
    std::optional<Message> m;
    // In slices, so that an eviction, a rewind the heartbeat thread learned
    // of, or cancel() are seen within a fraction of a second.
    const Deadline slice = std::min(deadline, deadline_in(std::chrono::milliseconds(200)));
    try {
      m = transport_.recv(c, slice);
    } catch (const Error&) {
      if (transport_.is_open(c) || left_.load()) throw;
      reconnect(c);  // re-sends what we are waiting on an answer to
      continue;
    }
    if (!m && MeshClock::now() < deadline) continue;
    if (!m) fail("no message from the coordinator before the deadline");
    if (m->frame.type != FrameType::control) fail("the coordinator sent a non-control frame");
    control::Message cm = control::decode(m->frame.payload, "the coordinator");
    if (!note_if_rewound(cm)) return cm;
  }
}

void MeshNode::poll_coordinator() {
  RoundCall call(*this, "poll_coordinator");
  for (;;) {
    throw_if_rewound();
    std::optional<Message> m;
    try {
      m = transport_.recv(coord_.load(), deadline_in(std::chrono::milliseconds(0)));
    } catch (const Error&) {
      return;  // away (restarting): the heartbeat thread reconnects, and a Welcome counts rewinds too
    }
    if (!m) return;
    if (m->frame.type != FrameType::control) continue;
    note_if_rewound(control::decode(m->frame.payload, "the coordinator"));
  }
}

// Waits for the previous ring node to dial in for `round`. Connections that
// arrive for a later round are kept for it; a newer ring announced by the
// coordinator meanwhile supersedes this round (kept in next_ring_).
ConnId MeshNode::accept_peer(uint64_t peer_id, uint64_t round, uint32_t lane, int64_t outer_step,
                             Deadline deadline) {
  for (;;) {
    auto early = early_peers_.find({peer_id, round, lane});
    if (early != early_peers_.end()) {
      const ConnId c = early->second;
      early_peers_.erase(early);
      if (transport_.is_open(c)) return c;
    }
    if (MeshClock::now() > deadline) fail("ring: node ", peer_id, " did not connect before the deadline");
    throw_if_cancelled("waiting for a ring neighbour");
    std::optional<Message> from_coord;
    try {
      from_coord = transport_.recv(coord_.load(), deadline_in(std::chrono::milliseconds(0)));
    } catch (const Error&) {
      // The coordinator is away (restarting): the ring it announced goes on;
      // the next wait for it reconnects.
    }
    if (from_coord) {
      const control::Message cm = control::decode(from_coord->frame.payload, "the coordinator");
      note_if_rewound(cm);
      if (const auto* ring = std::get_if<control::RingAnnounce>(&cm); ring && ring->round > round) {
        next_ring_ = *ring;
        fail("ring round ", round, " superseded by round ", ring->round);
      }
      if (const auto* r = std::get_if<control::Refused>(&cm)) fail("the coordinator gave up: ", r->reason);
      if (const auto* l = std::get_if<control::Late>(&cm); l && l->outer_step == outer_step)
        throw LateForRound(outer_step, str("the ring of outer step ", outer_step, " was re-formed without this node"));
    }
    std::optional<TransportEvent> ev = transport_.next_event(deadline_in(std::chrono::milliseconds(20)));
    if (!ev || ev->kind != TransportEvent::Kind::authenticated || !ev->inbound) continue;
    std::optional<Message> hello = transport_.recv(ev->conn, deadline);
    if (!hello || hello->frame.type != FrameType::control) {
      transport_.close(ev->conn, "no peer hello");
      continue;
    }
    const control::Message m = control::decode(hello->frame.payload, ev->peer);
    const auto* h = std::get_if<control::PeerHello>(&m);
    if (h && h->node_id == peer_id && h->round == round && h->lane == lane) return ev->conn;
    if (h && (h->round > round || (h->round == round && h->node_id == peer_id))) {
      // Another lane of this round, or a neighbour already in a newer round.
      early_peers_[{h->node_id, h->round, h->lane}] = ev->conn;
      continue;
    }
    transport_.close(ev->conn, "not the expected ring neighbour for this round");
  }
}

OuterRoundStats MeshNode::average(int64_t outer_step, const std::string& data_position,
                                  std::span<const float> input, std::span<float> output, SparseRound* sparse) {
  RoundCall call(*this, "average");
  throw_if_cancelled("before a round");
  const bool is_sparse = opt_.compression == Compression::Sparse;
  if (is_sparse && !sparse) fail("MeshNode::average: sparse compression needs the round's SparseRound (internal error)");
  if (is_sparse && !sparse->residual.empty() && sparse->residual.size() != input.size())
    fail("MeshNode::average: a residual of ", sparse->residual.size(), " values for ", input.size());
  OuterRoundStats stats;
  control::Ready ready{welcome_.node_id, outer_step, data_position};
  std::vector<float> attacked;  // intellect_chaos --byzantine: what a dishonest node sends instead
  if (opt_.attack_scale != 1.0) {
    attacked.assign(input.begin(), input.end());
    for (float& v : attacked) v = static_cast<float>(v * opt_.attack_scale);
    input = attacked;
  }
  if (opt_.announce_norms) {
    const Announcement an = announce_contribution(input, std::max(1, opt_.rings));
    ready.norm = static_cast<float>(an.norm * opt_.attack_announce);
    ready.commitment = an.commitment;
  }
  {
    std::lock_guard<std::mutex> lock(reconnect_mu_);
    pending_ = ready;
  }
  struct ClearPending {
    MeshNode* n;
    ~ClearPending() {
      std::lock_guard<std::mutex> lock(n->reconnect_mu_);
      n->pending_.reset();
    }
  } clear_pending{this};
  send_coordinator(ready);
  uint64_t last_round = 0;
  for (int attempt = 0;; ++attempt) {
    const Deadline deadline = deadline_in(opt_.round_timeout);
    control::RingAnnounce ring;
    if (next_ring_ && next_ring_->round > last_round) {
      ring = *next_ring_;
    } else {
      for (;;) {  // the next ring for this step; older announcements are stale
        control::Message m;
        try {
          m = recv_control(deadline);
        } catch (const RunRewound& e) {
          // Back to the state this node holds: its Ready stands (said again,
          // in case the coordinator dropped it); any other is the trainer's.
          if (e.outer_step != outer_step - 1) throw;
          send_coordinator(ready);
          continue;
        }
        if (const auto* r = std::get_if<control::Refused>(&m))
          fail("the coordinator gave up on outer step ", outer_step, ": ", r->reason);
        if (const auto* l = std::get_if<control::Late>(&m); l && l->outer_step == outer_step)
          throw LateForRound(outer_step, str("the ring of outer step ", outer_step, " formed without this node"));
        const auto* a = std::get_if<control::RingAnnounce>(&m);
        if (a && a->outer_step < outer_step) continue;  // a stale ring for a step this node has done
        if (a && a->round > last_round) {
          ring = *a;
          break;
        }
      }
    }
    next_ring_.reset();
    last_round = ring.round;
    if (ring.outer_step != outer_step) fail("the coordinator announced a ring for outer step ", ring.outer_step,
                                            " while this node is at ", outer_step);
    const auto me = std::find_if(ring.members.begin(), ring.members.end(),
                                 [&](const control::RingMember& r) { return r.node_id == welcome_.node_id; });
    if (me == ring.members.end()) fail("the announced ring does not include this node");
    test_kill_point(opt_.name, outer_step);
    const size_t n = ring.members.size(), i = static_cast<size_t>(me - ring.members.begin());
    stats.ring_size = n;
    stats.round = ring.round;
    stats.retries = attempt;
    if (sparse) sparse->sent.clear();
    if (n == 1) {
      if (is_sparse) {
        sparse->sent.emplace_back();
        sparse_average_alone(input, sparse->residual, output,
                             opt_.codec_block ? opt_.codec_block : default_codec_block(Compression::Sparse),
                             opt_.sparse_k, &sparse->sent.back());
      } else {
        std::copy(input.begin(), input.end(), output.begin());
      }
      return stats;
    }
    const control::RingMember& next = ring.members[(i + 1) % n];
    const control::RingMember& prev = ring.members[(i + n - 1) % n];
    // Never more rings than values (the size is the same on every node).
    const int K = static_cast<int>(std::clamp<size_t>(static_cast<size_t>(opt_.rings), 1, std::max<size_t>(1, input.size())));
    std::vector<ConnId> to_next(K, 0), from_prev(K, 0);
    uint64_t unreachable = 0;  // the neighbour we could not dial, for the coordinator
    try {
      const auto [host, port] = split_host_port(next.address, str("address of node ", next.node_id));
      // A live neighbour answers a dial at once; one we cannot reach within a
      // message timeout is reported as such (a partition between two live
      // nodes), before the others give up on their messages.
      const Deadline dial_by = std::min(deadline, deadline_in(opt_.message_timeout / 2));
      for (int k = 0; k < K; ++k) {
        try {
          to_next[k] = transport_.connect(host, port, dial_by);
        } catch (const Error&) {
          unreachable = next.node_id;
          throw;
        }
        send_control(to_next[k], control::PeerHello{welcome_.node_id, ring.round, static_cast<uint32_t>(k)});
      }
      for (int k = 0; k < K; ++k)
        from_prev[k] = accept_peer(prev.node_id, ring.round, static_cast<uint32_t>(k), outer_step, deadline);
      // One ring per segment, each on its own thread; the node's pacing (a
      // WAN link's capacity) is shared out among them.
      const std::vector<FlatRange> segs = ring_segments(input.size(), K);
      std::vector<std::unique_ptr<TransportRingLink>> plain;
      std::vector<std::unique_ptr<EmulatedRingLink>> emulated;
      std::vector<RingLink*> links;
      for (int k = 0; k < K; ++k) {
        plain.push_back(std::make_unique<TransportRingLink>(transport_, to_next[k], from_prev[k]));
        links.push_back(plain.back().get());
        if (opt_.emulate_link.on()) {
          LinkEmulation lane = opt_.emulate_link;
          lane.rate_bytes_per_s /= K;
          lane.seed = lane.seed * 1000003 + ring.round * 64 + static_cast<uint64_t>(k);
          emulated.push_back(std::make_unique<EmulatedRingLink>(*plain.back(), lane));
          links.back() = emulated.back().get();
        }
      }
      // Registered for cancel(), which aborts them from another thread.
      struct Registered {
        MeshNode& n;
        Registered(MeshNode& node, std::vector<RingLink*>& links) : n(node) {
          std::lock_guard<std::mutex> lock(n.lanes_mu_);
          n.lanes_ = &links;
          if (n.cancel_.load())
            for (RingLink* l : links) l->abort();
        }
        ~Registered() {
          std::lock_guard<std::mutex> lock(n.lanes_mu_);
          n.lanes_ = nullptr;
        }
      } registered(*this, links);
      std::vector<RingStats> lane_stats(K);
      std::vector<std::vector<RingCarried>> carried(K);
      std::vector<SparseSent> sent(is_sparse ? K : 0);
      std::mutex error_mu;
      std::exception_ptr first_error;  // the cause; the other lanes then fail from the abort
      auto run_lane = [&](int k) {
        try {
          if (is_sparse) {
            SparseRingOptions so;
            so.rank = static_cast<int>(i);
            so.world = static_cast<int>(n);
            so.round = ring.round;
            so.block = opt_.codec_block ? opt_.codec_block : default_codec_block(Compression::Sparse);
            so.k = opt_.sparse_k;
            so.aggregation = opt_.sparse_aggregation;
            if (opt_.chunk_elems > 0) so.chunk_blocks = std::max<size_t>(1, opt_.chunk_elems / so.block);
            so.message_timeout = opt_.message_timeout;
            so.deadline = deadline;
            const std::span<const float> res =
                sparse->residual.empty() ? sparse->residual : sparse->residual.subspan(segs[k].begin, segs[k].size());
            lane_stats[k] = sparse_allgather_average(*links[k], so, input.subspan(segs[k].begin, segs[k].size()), res,
                                                     output.subspan(segs[k].begin, segs[k].size()), &sent[k],
                                                     opt_.serve_state ? &carried[k] : nullptr);
            sent[k].offset += segs[k].begin;
            if (!emulated.empty()) emulated[k]->drain(deadline);
            return;
          }
          RingOptions ro;
          ro.rank = static_cast<int>(i);
          ro.world = static_cast<int>(n);
          ro.round = ring.round;
          ro.compression = opt_.compression;
          if (opt_.compression != Compression::None)
            ro.int8_block = opt_.codec_block ? opt_.codec_block : default_codec_block(opt_.compression);
          if (opt_.chunk_elems > 0) ro.chunk_elems = opt_.chunk_elems;
          else if (opt_.compression != Compression::None) ro.chunk_elems = size_t{1} << 18;
          ro.message_timeout = opt_.message_timeout;
          ro.deadline = deadline;
          for (const control::RingMember& m : ring.members) ro.announced_norms.push_back(m.norm);
          lane_stats[k] = ring_allreduce_average(*links[k], ro, input.subspan(segs[k].begin, segs[k].size()),
                                                 output.subspan(segs[k].begin, segs[k].size()),
                                                 opt_.serve_state ? &carried[k] : nullptr);
          if (!emulated.empty()) emulated[k]->drain(deadline);
        } catch (...) {
          {
            std::lock_guard<std::mutex> lock(error_mu);
            if (!first_error) first_error = std::current_exception();
          }
          for (auto& l : links) l->abort();  // the other lanes fail fast instead of at their deadline
        }
      };
      // Wall time of all lanes together: lanes start a little apart, so the
      // slowest lane's own time would understate the round.
      const auto t0 = RingClock::now();
      std::vector<std::thread> lanes;
      for (int k = 1; k < K; ++k) lanes.emplace_back(run_lane, k);
      run_lane(0);
      for (std::thread& t : lanes) t.join();
      const double wall = std::chrono::duration<double>(RingClock::now() - t0).count();
      if (first_error) std::rethrow_exception(first_error);
      stats.bytes_sent = stats.bytes_received = 0;
      stats.seconds = wall;
      stats.encode_s = stats.recv_wait_s = stats.decode_s = stats.send_s = 0;
      for (const RingStats& rs : lane_stats) {
        stats.bytes_sent += rs.bytes_sent;
        stats.bytes_received += rs.bytes_received;
        // The lanes run side by side: the slowest one's share is the round's.
        stats.encode_s = std::max(stats.encode_s, rs.encode_s);
        stats.recv_wait_s = std::max(stats.recv_wait_s, rs.recv_wait_s);
        stats.decode_s = std::max(stats.decode_s, rs.decode_s);
        stats.send_s = std::max(stats.send_s, rs.send_s);
      }
      stats.rings = K;
      if (opt_.serve_state) {
        // The round as the rings carried it, for joiners and late nodes.
        RoundEncoder round(output.size());
        for (int k = 0; k < K; ++k) {
          if (carried[k].empty()) {
            round.add_fp32(output.subspan(segs[k].begin, segs[k].size()));
            continue;
          }
          for (RingCarried& c : carried[k]) {
            round.add_carried(c);
            std::vector<uint8_t>().swap(c.encoded);  // one copy of the round at a time
          }
        }
        last_round_ = round.finish();
        last_round_step_ = outer_step;
      }
      if (is_sparse) sparse->sent = std::move(sent);
      for (int k = 0; k < K; ++k) {
        transport_.close(to_next[k], "round done");
        transport_.close(from_prev[k], "round done");
      }
      return stats;
    } catch (const Error& e) {
      for (int k = 0; k < K; ++k) {
        if (to_next[k]) transport_.close(to_next[k], "round failed");
        if (from_prev[k]) transport_.close(from_prev[k], "round failed");
      }
      if (dynamic_cast<const LateForRound*>(&e)) throw;  // left out of the re-formed ring: not a failure
      if (cancel_.load()) throw StoppedOnRequest(str("outer step ", outer_step, ": round given up (the node stops)"));
      log_to(opt_.log, str("outer step ", outer_step, " round ", ring.round, " failed: ", e.what()));
      uint64_t accused = 0;
      if (const auto* c = dynamic_cast<const ContributionExceedsAnnouncement*>(&e))
        if (c->offender_rank >= 0 && static_cast<size_t>(c->offender_rank) < n) accused = ring.members[c->offender_rank].node_id;
      if (!next_ring_)
        send_coordinator(
            control::RingFailed{welcome_.node_id, outer_step, ring.round, e.what(), unreachable, accused});
      if (attempt + 1 > opt_.max_retries) throw;
    }
  }
}

StateDownload MeshNode::fetch_state(StateKind kind, int64_t outer_step, std::chrono::milliseconds give_up) {
  RoundCall call(*this, "fetch_state");
  StateDownload d;
  d.kind = kind;
  d.outer_step = outer_step;
  const Deadline deadline = deadline_in(give_up);
  std::string last_error = "no donor was assigned";
  for (;;) {
    if (evicted_.load()) throw EvictedFromRun("the coordinator no longer counts this node (evicted while it fetched the state)");
    if (opt_.stop && opt_.stop->load())
      throw StoppedOnRequest(str("stopped on request while fetching the ", state_kind_name(kind)));
    throw_if_cancelled("fetching state from a donor");
    if (donor_id_ != 0) {
      try {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - MeshClock::now());
        ::intellect::fetch_state(d, donor_address_, opt_.credentials, opt_.state_timeout, 8,
                                 std::max(left, std::chrono::milliseconds(1)), opt_.stop);
        return d;
      } catch (const Error& e) {
        last_error = e.what();
        log_to(opt_.log, str("fetching the ", state_kind_name(kind), " from node ", donor_id_, " failed after ",
                             d.next_chunk, " of ", d.n_chunks, " chunks: ", e.what()));
        if (dynamic_cast<const DonorHasOtherState*>(&e)) {
          // Not what this download started from (or nothing yet): the next
          // donor's own, from its first chunk.
          d = StateDownload{};
          d.kind = kind;
          d.outer_step = outer_step;
        }
        // Not at once: a donor that lacks a round may have it in a moment,
        // and each try costs it and the coordinator a dial.
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      }
    }
    if (MeshClock::now() > deadline)
      fail("could not fetch the ", state_kind_name(kind), " (outer step ", outer_step, "): ", last_error);
    // Another donor, from the coordinator (it may name the same one: then retry it).
    const control::DonorRequest request{welcome_.node_id, donor_id_};
    {
      std::lock_guard<std::mutex> lock(reconnect_mu_);
      pending_ = request;
    }
    send_coordinator(request);
    for (;;) {
      const control::Message m = recv_control(deadline);
      if (const auto* a = std::get_if<control::DonorAssign>(&m)) {
        donor_id_ = a->donor_id;
        donor_address_ = a->donor_address;
        std::lock_guard<std::mutex> lock(reconnect_mu_);
        pending_.reset();
        break;
      }
    }
    if (donor_id_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

std::optional<StateDownload> MeshNode::fetch_round_once(int64_t outer_step) {
  RoundCall call(*this, "fetch_round_once");
  if (donor_id_ == 0) return std::nullopt;
  StateDownload d;
  d.kind = StateKind::round;
  d.outer_step = outer_step;
  try {
    ::intellect::fetch_state(d, donor_address_, opt_.credentials, opt_.state_timeout);
    return d;
  } catch (const AuthenticationFailed&) {
    throw;  // another run's donor, or a tampered link: asking again will not help
  } catch (const DonorHasOtherState&) {
    return std::nullopt;  // not completed there yet, or already dropped
  } catch (const Error& e) {
    // Logged once per distinct failure: the caller asks again in a loop.
    const std::string why = str("round ", outer_step, " from donor ", donor_id_, " failed: ", e.what());
    if (why != last_fetch_error_) log_to(opt_.log, why);
    last_fetch_error_ = why;
    return std::nullopt;
  }
}

std::optional<int64_t> MeshNode::donor_progress() {
  RoundCall call(*this, "donor_progress");
  if (donor_id_ == 0) return std::nullopt;
  try {
    return fetch_progress(donor_address_, opt_.credentials, opt_.state_timeout);
  } catch (const AuthenticationFailed&) {
    throw;
  } catch (const Error& e) {
    log_to(opt_.log, str("progress from donor ", donor_id_, " not known: ", e.what()));
    return std::nullopt;
  }
}

void MeshNode::publish_snapshot(int64_t outer_step, std::vector<uint8_t> bytes) {
  if (!state_) return;
  if (snapshot_worker_.joinable()) snapshot_worker_.join();  // the previous one (done: it was no longer busy)
  snapshot_busy_ = true;
  snapshot_worker_ = std::thread([this, outer_step, b = std::move(bytes)]() mutable {
    try {
      state_->publish_snapshot(make_state_blob(StateKind::snapshot, outer_step, std::move(b)));
    } catch (const std::exception& e) {  // out of memory, say: joiners ask again, the trainer offers another
      log_to(opt_.log, str("could not publish the snapshot of outer step ", outer_step, ": ", e.what()));
    }
    snapshot_busy_ = false;
  });
}

void MeshNode::publish_round(int64_t outer_step, std::span<const float> averaged) {
  RoundCall call(*this, "publish_round");
  if (!state_) return;
  // The ring's own bytes when this node took part (or fetched the round);
  // fp32 only when it has nothing else (a ring of one).
  std::vector<uint8_t> bytes = last_round_step_ == outer_step ? std::move(last_round_) : encode_round_fp32(averaged);
  last_round_.clear();
  last_round_step_ = -1;
  // A node that applies rounds one round late keeps one more for joiners.
  state_->publish_round(make_state_blob(StateKind::round, outer_step, std::move(bytes)),
                        opt_.rounds_applied_late ? 3 : 2);
}

void MeshNode::decode_round_into(const StateDownload& d, std::span<float> out) {
  RoundCall call(*this, "decode_round_into");
  decode_round(d.bytes, out, str("the donor's round ", d.outer_step));
  if (!state_) return;  // nobody to serve it to
  last_round_ = d.bytes;
  last_round_step_ = d.outer_step;
}

MeshNode::RoundCall::RoundCall(MeshNode& n, const char* what) : n_(n) {
  if (n_.round_callers_.fetch_add(1) != 0) {
    n_.round_callers_.fetch_sub(1);
    fail("MeshNode::", what, " called while another thread is in a round call: round calls are made by one "
         "thread at a time (mesh_node.h)");
  }
}

void MeshNode::throw_if_cancelled(const char* what) const {
  if (cancel_.load()) throw StoppedOnRequest(str("the node stops: gave up ", what));
}

void MeshNode::cancel() {
  cancel_ = true;
  std::lock_guard<std::mutex> lock(lanes_mu_);
  if (lanes_)
    for (RingLink* l : *lanes_) l->abort();
}

void MeshNode::report_hash(int64_t outer_step, uint64_t hash) {
  send_coordinator(control::OuterHash{welcome_.node_id, outer_step, hash});
}

}  // namespace intellect
