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
  send_on(coord_, control::Join{opt_.name, opt_.address, 1, opt_.state_address, held_step_.load(), opt_.settings});
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
  beating_ = true;
  heartbeat_ = std::thread([this] { heartbeat_loop(); });
}

CoordinatorClient::~CoordinatorClient() {
  try {
    leave("node shutting down");
  } catch (...) {
  }
  {
    std::lock_guard<std::mutex> lock(link_mu_);
    stop_ = true;
  }
  link_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

void CoordinatorClient::pause(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(link_mu_);
  link_cv_.wait_for(lock, d, [this] { return stop_.load() || reconnect_wanted_; });
}

void CoordinatorClient::heartbeat_loop() {
  const auto every = std::chrono::milliseconds(welcome_.heartbeat_ms);
  // A node that left the run (finished, or evicted and told so) beats no
  // more, and a send that fails because leave() just closed the
  // connection is no failure worth a line.
  bool said_cancelled = false;
  while (!stop_.load() && !left_.load()) {
    const ConnId c = coord_.load();
    {
      std::lock_guard<std::mutex> lock(link_mu_);
      reconnect_wanted_ = false;  // this turn checks the connection
    }
    try {
      control::Heartbeat beat{welcome_.node_id, held_step_.load(), std::nullopt};
      {
        std::lock_guard<std::mutex> lock(status_mu_);
        beat.status = status_;
      }
      send_on(c, beat);
    } catch (const Error& e) {
      if (left_.load()) return;
      // A stopping node does not dial a coordinator that is away: it only
      // says goodbye, best effort.
      if (cancel_.load()) {
        if (!said_cancelled) log(str("heartbeat failed: ", e.what(), "; not reconnecting: the node stops"));
        said_cancelled = true;
      } else {
        log(str("heartbeat failed: ", e.what()));
      }
      if (!transport_.is_open(c) && !cancel_.load()) {
        try {
          reconnect(c);
        } catch (const EvictedFromRun& e2) {
          // No point beating for a run that no longer counts this node:
          // the caller sees the flag at its next wait and ends.
          log(str("evicted: ", e2.what()));
          {
            std::lock_guard<std::mutex> lock(link_mu_);
            evicted_ = true;
          }
          link_cv_.notify_all();
          return;
        } catch (const Error& e2) {
          log(str("could not reach the coordinator again: ", e2.what()));
          {
            std::lock_guard<std::mutex> lock(link_mu_);
            last_link_error_ = e2.what();
          }
          link_cv_.notify_all();
        }
      }
    }
    pause(every);
  }
}

void CoordinatorClient::leave(const std::string& reason) {
  if (left_.exchange(true)) return;
  link_cv_.notify_all();  // a caller waiting for a new connection stops waiting
  const ConnId c = coord_.load();
  try {  // best effort: a coordinator that is away learns it from the timeout
    send_on(c, control::Leave{welcome_.node_id, reason});
  } catch (const Error& e) {
    log(str("could not say goodbye to the coordinator: ", e.what()));
  }
  transport_.close(c, "left the run");
}

void CoordinatorClient::rejoin(ConnId c) {
  send_on(c, control::Rejoin{welcome_.node_id, opt_.name, opt_.address, opt_.state_address, held_step_.load()});
  // In slices: a stop request ends the wait for an answer too.
  const Deadline answer_by = deadline_in(std::chrono::milliseconds(5000));
  std::optional<Message> m;
  while (!m && MeshClock::now() < answer_by) {
    if (cancel_.load() || stop_.load()) fail("gave up the rejoin: the node stops");
    m = transport_.recv(c, std::min(answer_by, deadline_in(std::chrono::milliseconds(200))));
  }
  if (!m) fail("no answer to the rejoin within 5 s");
  if (m->frame.type != FrameType::control) fail("the coordinator answered the rejoin with a non-control frame");
  const control::Message reply = control::decode(m->frame.payload, "the coordinator");
  if (const auto* r = std::get_if<control::Refused>(&reply))
    throw EvictedFromRun(str("the coordinator no longer takes this node: ", r->reason));
  const auto* back = std::get_if<control::Welcome>(&reply);
  if (!back) fail("the coordinator answered the rejoin with '", control::name(reply), "'");
  if (back->rewinds > rewinds_.load()) note_rewind(back->outer_step, back->rewinds);
}

void CoordinatorClient::reconnect(ConnId stale) {
  if (coord_.load() != stale) return;  // replaced already
  log("lost the coordinator; reconnecting");
  const auto [chost, cport] = split_host_port(opt_.coordinator, "mesh.coordinator");
  // As long as a round may take: a coordinator restarted by hand takes a while.
  const Deadline deadline = deadline_in(opt_.reconnect_timeout);
  std::string why = "no attempt";
  // Not for a node that has left: the coordinator would refuse it, and a
  // clean finish would log an eviction. No lock is held here: callers queue
  // their requests meanwhile, and cancel ends this loop within one attempt.
  while (MeshClock::now() < deadline && !stop_.load() && !cancel_.load() && !left_.load()) {
    ConnId c = 0;
    try {
      c = transport_.connect(chost, cport, std::min(deadline, deadline_in(std::chrono::milliseconds(2000))));
      rejoin(c);
      std::vector<control::Message> resend;
      {
        // The swap and the copy together: a request queued after this
        // goes out on `c` from its own caller, one queued before is in `resend`.
        std::lock_guard<std::mutex> lock(link_mu_);
        coord_ = c;
        resend = pending_;
        last_link_error_.clear();
      }
      link_cv_.notify_all();
      transport_.close(stale, "replaced");
      log("back with the coordinator");
      for (const control::Message& p : resend) send_on(c, p);
      return;
    } catch (const EvictedFromRun&) {
      if (c) transport_.close(c, "evicted");
      throw;
    } catch (const Error& e) {
      why = e.what();
      if (c && coord_.load() != c) transport_.close(c, "rejoin failed");
      if (coord_.load() == c) return;  // swapped in, then a re-send failed: the next beat finds out
      std::unique_lock<std::mutex> lock(link_mu_);
      link_cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stop_.load() || left_.load(); });
    }
  }
  if (left_.load() || stop_.load()) return;  // a goodbye meanwhile: nothing to come back to
  if (cancel_.load()) fail("gave up reconnecting to the coordinator at ", opt_.coordinator, ": the node stops");
  fail("the coordinator at ", opt_.coordinator, " did not come back within ", opt_.reconnect_timeout.count(),
       " ms (last error: ", why, ")");
}

void CoordinatorClient::want_reconnect() {
  {
    std::lock_guard<std::mutex> lock(link_mu_);
    reconnect_wanted_ = true;
  }
  link_cv_.notify_all();
}

ConnId CoordinatorClient::await_new_link(ConnId stale, Deadline deadline) {
  // Before the join completed nobody reconnects: the join fails.
  if (!beating_.load()) fail("lost the coordinator at ", opt_.coordinator, " before this node joined the run");
  want_reconnect();
  std::unique_lock<std::mutex> lock(link_mu_);
  for (;;) {
    if (coord_.load() != stale) return coord_.load();
    if (evicted_.load()) throw EvictedFromRun("the coordinator no longer counts this node");
    if (cancel_.load()) throw StoppedOnRequest("the node stops: gave up waiting for the coordinator to come back");
    if (left_.load() || stop_.load()) fail("lost the coordinator after this node left the run");
    if (MeshClock::now() >= deadline)
      fail("lost the coordinator at ", opt_.coordinator, " and it did not come back before the deadline",
           last_link_error_.empty() ? std::string() : " (last reconnection: " + last_link_error_ + ")");
    // In slices: cancel() sets a flag without notifying.
    link_cv_.wait_until(lock, std::min(deadline, deadline_in(std::chrono::milliseconds(100))));
  }
}

void CoordinatorClient::send(const control::Message& m) {
  const ConnId c = coord_.load();
  try {
    send_on(c, m);
  } catch (const Error&) {
    if (transport_.is_open(c)) throw;
    send_on(await_new_link(c, deadline_in(opt_.reconnect_timeout)), m);
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
  ConnId conn = 0;
  {
    std::lock_guard<std::mutex> lock(c_.link_mu_);
    c_.pending_.push_back(request);
    conn = c_.coord_.load();
  }
  try {
    c_.send_on(conn, request);
  } catch (const Error&) {
    // Lost: queued, and the reconnection sends it (a caller's next() waits
    // for the answer). Anything else is the caller's to know.
    if (!c_.transport_.is_open(conn) && c_.beating_.load()) {
      c_.want_reconnect();
      return;
    }
    std::lock_guard<std::mutex> lock(c_.link_mu_);  // no destructor runs for a constructor that throws
    c_.pending_.pop_back();
    throw;
  }
}

CoordinatorClient::Awaiting::~Awaiting() {
  std::lock_guard<std::mutex> lock(c_.link_mu_);
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
      await_new_link(c, deadline);  // the reconnection re-sent what we are waiting on an answer to
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
