#include "dist/coordinator_client.h"

#include <algorithm>
#include <cstdio>

#include "util/error.h"

namespace intellect {

void mesh_log(const std::function<void(const std::string&)>& log, const std::string& m) {
  if (log) log(m);
  else std::fprintf(stderr, "[mesh] %s\n", m.c_str());
}

void CoordinatorClient::log(const std::string& m) const { mesh_log(opt_.log, m); }

CoordinatorClient::CoordinatorClient(Transport& transport, CoordinatorClientOptions options,
                                     const std::atomic<bool>& cancel, int64_t held_step)
    : transport_(transport), opt_(std::move(options)), cancel_(cancel), held_step_(held_step) {
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
  send_on(coord_, control::Join{opt_.name, opt_.address, 1, opt_.state_address, held_step_.load()});
  const Deadline answer_by = deadline_in(opt_.join_timeout);
  control::Message reply;
  for (;;) {  // a rewind before this node is a member is none of its business
    std::variant<control::Message, RewoundTo> heard = next(answer_by);
    if (auto* m = std::get_if<control::Message>(&heard)) {
      reply = std::move(*m);
      break;
    }
  }
  if (const auto* r = std::get_if<control::Refused>(&reply)) fail("the coordinator refused to let this node join: ", r->reason);
  const auto* w = std::get_if<control::Welcome>(&reply);
  if (!w) fail("the coordinator answered the join with '", control::name(reply), "'");
  welcome_ = *w;
  rewinds_ = welcome_.rewinds;
  log(str("joined the run as node ", welcome_.node_id, " (data partition ", welcome_.partition, ", epoch ",
          welcome_.epoch, "), listening for peers on ", opt_.address));
  heartbeat_ = std::thread([this] { heartbeat_loop(); });
}

CoordinatorClient::~CoordinatorClient() {
  try {
    leave("node shutting down");
  } catch (...) {
  }
  stop_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

void CoordinatorClient::heartbeat_loop() {
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
      send_on(c, beat);
    } catch (const Error& e) {
      if (left_.load()) return;
      log(str("heartbeat failed: ", e.what()));
      if (!transport_.is_open(c)) {
        try {
          reconnect(c);
        } catch (const EvictedFromRun& e2) {
          // No point beating for a run that no longer counts this node:
          // the caller sees the flag at its next wait and ends.
          log(str("evicted: ", e2.what()));
          evicted_ = true;
          return;
        } catch (const Error& e2) {
          log(str("could not reach the coordinator again: ", e2.what()));
        }
      }
    }
    for (auto t = std::chrono::milliseconds(0); t < every && !stop_.load(); t += std::chrono::milliseconds(50))
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void CoordinatorClient::leave(const std::string& reason) {
  if (left_.exchange(true)) return;
  const ConnId c = coord_.load();
  try {  // best effort: a coordinator that is away learns it from the timeout
    send_on(c, control::Leave{welcome_.node_id, reason});
  } catch (const Error& e) {
    log(str("could not say goodbye to the coordinator: ", e.what()));
  }
  transport_.close(c, "left the run");
}

void CoordinatorClient::reconnect(ConnId stale) {
  std::lock_guard<std::mutex> lock(reconnect_mu_);
  if (coord_.load() != stale) return;  // another thread got there first
  log("lost the coordinator; reconnecting");
  const auto [chost, cport] = split_host_port(opt_.coordinator, "mesh.coordinator");
  // As long as a round may take: a coordinator restarted by hand takes a while.
  const Deadline deadline = deadline_in(opt_.reconnect_timeout);
  std::string why = "no attempt";
  // Not for a node that has left: the coordinator would refuse it, and a
  // clean finish would log an eviction.
  while (MeshClock::now() < deadline && !stop_.load() && !cancel_.load() && !left_.load()) {
    ConnId c = 0;
    try {
      c = transport_.connect(chost, cport, deadline_in(std::chrono::milliseconds(2000)));
      send_on(c, control::Rejoin{welcome_.node_id, opt_.name, opt_.address, opt_.state_address, held_step_.load()});
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
      log("back with the coordinator");
      for (const control::Message& p : pending_) send_on(c, p);
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
  if (left_.load()) return;  // a goodbye meanwhile: nothing to come back to
  fail("the coordinator at ", opt_.coordinator, " did not come back within ", opt_.reconnect_timeout.count(),
       " ms (last error: ", why, ")");
}

void CoordinatorClient::send(const control::Message& m) {
  const ConnId c = coord_.load();
  try {
    send_on(c, m);
  } catch (const Error&) {
    if (transport_.is_open(c)) throw;
    reconnect(c);
    send_on(coord_.load(), m);
  }
}

void CoordinatorClient::send_on(ConnId conn, const control::Message& m) {
  Frame f;
  f.payload = control::encode(m);
  // An accusation's evidence does not fit a control frame.
  f.type = std::holds_alternative<control::RingFailed>(m) && f.payload.size() > frame_type_info(
                                                                 static_cast<uint16_t>(FrameType::control))->max_payload
               ? FrameType::evidence
               : FrameType::control;
  transport_.send(conn, std::move(f), deadline_in(opt_.message_timeout));
}

CoordinatorClient::Awaiting::Awaiting(CoordinatorClient& c, const control::Message& request) : c_(c) {
  {
    std::lock_guard<std::mutex> lock(c_.reconnect_mu_);
    c_.pending_.push_back(request);
  }
  try {
    c_.send(request);
  } catch (...) {
    std::lock_guard<std::mutex> lock(c_.reconnect_mu_);  // no destructor runs for a constructor that throws
    c_.pending_.pop_back();
    throw;
  }
}

CoordinatorClient::Awaiting::~Awaiting() {
  std::lock_guard<std::mutex> lock(c_.reconnect_mu_);
  c_.pending_.pop_back();
}

void CoordinatorClient::note_rewind(int64_t outer_step, uint64_t rewinds) {
  std::lock_guard<std::mutex> lock(rewind_mu_);
  if (rewinds <= rewinds_.load()) return;
  rewinds_ = rewinds;
  rewound_to_ = outer_step;
  log(str("the run went back to outer step ", outer_step, " (rewind ", rewinds,
          "): every node holding a newer one is gone"));
}

std::optional<RewoundTo> CoordinatorClient::take_rewind() {
  std::optional<int64_t> to;
  {
    std::lock_guard<std::mutex> lock(rewind_mu_);
    to.swap(rewound_to_);
  }
  if (!to) return std::nullopt;
  return RewoundTo{*to};
}

bool CoordinatorClient::note_if_rewound(const control::Message& m) {
  const auto* rw = std::get_if<control::Rewound>(&m);
  if (rw) note_rewind(rw->outer_step, rw->rewinds);
  if (const auto* ring = std::get_if<control::RingAnnounce>(&m)) note_ring_after_rewind(*ring);
  return rw != nullptr;
}

void CoordinatorClient::note_ring_after_rewind(const control::RingAnnounce& ring) {
  // The coordinator's messages arrive in the order it sent them. A ring for
  // outer step s that includes this node, read after a rewind to s - 1, was
  // formed after that rewind, from this node's Ready for s: the rewind is
  // answered. Reported later, it would make the caller drop a round of that
  // ring as if the rewind had come after it, while the other members apply
  // it (a divergence: the CI failure of 2026-12-03, docs/RELIABILITY.md).
  const bool member = std::any_of(ring.members.begin(), ring.members.end(),
                                  [&](const control::RingMember& r) { return r.node_id == welcome_.node_id; });
  if (!member) return;
  std::lock_guard<std::mutex> lock(rewind_mu_);
  if (!rewound_to_ || *rewound_to_ != ring.outer_step - 1) return;
  rewound_to_.reset();
  log(str("the rewind to outer step ", ring.outer_step - 1, " is answered by round ", ring.round,
          " of outer step ", ring.outer_step, ", announced after it"));
}

std::variant<control::Message, RewoundTo> CoordinatorClient::next(Deadline deadline) {
  // A rewind concerns whatever the caller waits for: it is reported at the
  // top of the next turn (after the deadline check, so it is never lost).
  for (;;) {
    if (evicted_.load()) throw EvictedFromRun("the coordinator no longer counts this node");
    if (cancel_.load()) throw StoppedOnRequest("the node stops: gave up waiting for the coordinator");
    if (std::optional<RewoundTo> back = take_rewind()) return *back;
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

std::optional<control::Message> CoordinatorClient::poll() {
  std::optional<Message> m;
  try {
    m = transport_.recv(coord_.load(), deadline_in(std::chrono::milliseconds(0)));
  } catch (const Error&) {
    // The coordinator is away (restarting): the heartbeat thread reconnects,
    // and its Welcome counts rewinds too.
    return std::nullopt;
  }
  if (!m) return std::nullopt;
  control::Message cm = control::decode(m->frame.payload, "the coordinator");
  note_if_rewound(cm);
  return cm;
}

std::optional<RewoundTo> CoordinatorClient::drain() {
  for (;;) {
    if (std::optional<RewoundTo> back = take_rewind()) return back;
    std::optional<Message> m;
    try {
      m = transport_.recv(coord_.load(), deadline_in(std::chrono::milliseconds(0)));
    } catch (const Error&) {
      return std::nullopt;  // away (restarting): the heartbeat thread reconnects, and a Welcome counts rewinds too
    }
    if (!m) return std::nullopt;
    if (m->frame.type != FrameType::control) continue;
    note_if_rewound(control::decode(m->frame.payload, "the coordinator"));
  }
}

}  // namespace intellect
