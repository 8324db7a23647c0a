#include "dist/state_stream.h"

#include <sodium.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "dist/bytes.h"
#include "dist/control.h"
#include "util/error.h"

namespace intellect {

namespace {

void note(const std::function<void(const std::string&)>& log, const std::string& m) {
  if (log) log(m);
  else std::fprintf(stderr, "[state] %s\n", m.c_str());
}

// Fault injection for the tests: INTELLECT_STATE_TEST_CORRUPT=<chunk> flips a
// byte of that chunk the first time it is served; INTELLECT_STATE_TEST_DIE_AFTER=<n>
// kills the donor (SIGKILL) after it has served n chunks.
long env_long(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::strtol(v, nullptr, 10) : -1;
}

}  // namespace

std::shared_ptr<const StateBlob> make_state_blob(StateKind kind, int64_t outer_step, std::vector<uint8_t> bytes,
                                                 size_t chunk_bytes) {
  if (chunk_bytes == 0 || chunk_bytes > (size_t{32} << 20)) fail("state blob: chunk size ", chunk_bytes, " is not in (0, 32 MiB]");
  auto b = std::make_shared<StateBlob>();
  b->kind = kind;
  b->outer_step = outer_step;
  b->chunk_bytes = chunk_bytes;
  b->bytes = std::move(bytes);
  // One pass over the bytes, on several threads: at 10B a snapshot is
  // ~160 GB, and a round (a quarter of that) is published on the training
  // thread.
  b->chunk_digests = chunk_digests(b->bytes, chunk_bytes, std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 16));
  b->digest = blob_digest(b->bytes.size(), chunk_bytes, b->chunk_digests);
  return b;
}

// --- server -------------------------------------------------------------------

StateServer::StateServer(const PeerCredentials& secret, const std::string& host,
                         std::function<void(const std::string&)> log)
    : log_(std::move(log)),
      transport_(TransportOptions{secret, std::chrono::milliseconds(10000), std::chrono::milliseconds(60000),
                                  size_t(64) << 20, size_t(1) << 20, 16, log_}) {
  const uint16_t port = transport_.listen(host, 0);
  address_ = host + ":" + std::to_string(port);
  thread_ = std::thread([this] { serve(); });
}

StateServer::~StateServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void StateServer::publish_snapshot(std::shared_ptr<const StateBlob> blob) {
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_ = std::move(blob);
  snapshot_used_ = std::chrono::steady_clock::now();
  snapshot_wanted_ = false;
}

void StateServer::drop_idle_snapshot(std::chrono::milliseconds idle) {
  std::lock_guard<std::mutex> lock(mu_);
  if (snapshot_ && std::chrono::steady_clock::now() - snapshot_used_ > idle) snapshot_.reset();
}

void StateServer::publish_round(std::shared_ptr<const StateBlob> blob, size_t keep) {
  std::lock_guard<std::mutex> lock(mu_);
  newest_round_ = std::max(newest_round_, blob->outer_step);
  rounds_[blob->outer_step] = std::move(blob);
  while (rounds_.size() > keep) rounds_.erase(rounds_.begin());
}

void StateServer::serve() {
  while (!stop_.load()) {
    while (transport_.next_event(deadline_in(std::chrono::milliseconds(0)))) {
    }
    std::optional<Message> m;
    try {
      m = transport_.recv(kAnyConn, deadline_in(std::chrono::milliseconds(50)));
    } catch (const Error&) {
      continue;  // a connection closed with nothing left in its inbox
    }
    if (!m) continue;
    try {
      serve_one(*m);
    } catch (const Error& e) {
      note(log_, str("state request from ", transport_.peer(m->conn), " failed: ", e.what()));
      transport_.close(m->conn, e.what());
    }
  }
}

// One request, answered in full on this thread: the summary, then the chunks
// from the one asked for. The blob is held by shared_ptr, so a newer one
// published meanwhile does not disturb the stream.
void StateServer::serve_one(const Message& m) {
  const ConnId conn = m.conn;
  const std::string who = transport_.peer(conn);
  if (m.frame.type != FrameType::control) fail("expected a state request, got a ", frame_type_name(m.frame.type), " frame");
  const control::Message msg = control::decode(m.frame.payload, who);
  const auto* req = std::get_if<control::StateRequest>(&msg);
  if (!req) fail("expected a state request, got '", control::name(msg), "'");
  const StateKind kind = static_cast<StateKind>(req->kind);
  auto send_control = [&](const control::Message& c) {
    Frame f;
    f.type = FrameType::control;
    f.payload = control::encode(c);
    transport_.send(conn, std::move(f), deadline_in(std::chrono::milliseconds(60000)));
  };
  if (kind == StateKind::progress) {
    control::StateInfo info;
    info.kind = req->kind;
    info.outer_step = progress_.load();
    info.chunk_bytes = 1;
    send_control(info);
    return;
  }
  std::shared_ptr<const StateBlob> blob;
  std::string have;
  bool pending = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (kind == StateKind::snapshot) {
      const Digest none{};
      const bool fresh = req->outer_step < 0 && req->digest == none;
      if (fresh && (!snapshot_ || snapshot_->outer_step < newest_round_ - snapshot_lag_.load())) {
        // A new joiner, and nothing current to give it: the trainer takes a
        // snapshot after its next inner step.
        snapshot_wanted_ = true;
        pending = true;
      }
      blob = snapshot_;
      if (blob && req->outer_step >= 0 && blob->outer_step != req->outer_step) blob.reset();
      if (blob) snapshot_used_ = std::chrono::steady_clock::now();
      have = snapshot_ ? str("snapshot of outer step ", snapshot_->outer_step) : "no snapshot";
    } else {
      auto it = rounds_.find(req->outer_step);
      if (it != rounds_.end()) blob = it->second;
      have = rounds_.empty() ? "no rounds" : str("rounds ", rounds_.begin()->first, "..", rounds_.rbegin()->first);
    }
  }
  if (pending) {
    send_control(control::StatePending{100});
    return;
  }
  const Digest zero{};
  if (blob && req->digest != zero && req->digest != blob->digest) blob.reset();
  if (!blob) {
    send_control(control::Refused{str("no ", state_kind_name(kind), " for outer step ", req->outer_step,
                                      " with that digest here (", have, ")")});
    return;
  }
  if (req->first_chunk > blob->chunks()) fail("asked for chunk ", req->first_chunk, " of ", blob->chunks());
  control::StateInfo info;
  info.kind = static_cast<uint8_t>(blob->kind);
  info.outer_step = blob->outer_step;
  info.digest = blob->digest;
  info.total_bytes = blob->bytes.size();
  info.chunk_bytes = blob->chunk_bytes;
  info.n_chunks = static_cast<uint32_t>(blob->chunks());
  send_control(info);
  static const long corrupt_at = env_long("INTELLECT_STATE_TEST_CORRUPT");
  static const long die_after = env_long("INTELLECT_STATE_TEST_DIE_AFTER");
  static bool corrupted = false;
  for (uint32_t i = req->first_chunk; i < blob->chunks(); ++i) {
    const size_t at = static_cast<size_t>(i) * blob->chunk_bytes;
    const size_t n = std::min(blob->chunk_bytes, blob->bytes.size() - at);
    StateChunkHeader h;
    h.kind = blob->kind;
    h.outer_step = blob->outer_step;
    h.index = i;
    h.count = static_cast<uint32_t>(n);
    h.digest = blob->chunk_digests[i];
    Frame f;
    f.type = FrameType::data;
    f.payload = encode_state_chunk(h, std::span<const uint8_t>(blob->bytes).subspan(at, n));
    if (!corrupted && corrupt_at == static_cast<long>(i) && n > 0) {
      f.payload.back() ^= 0x5a;  // the digest no longer matches: the joiner must ask again
      corrupted = true;
    }
    transport_.send(conn, std::move(f), deadline_in(std::chrono::milliseconds(60000)));
    const uint64_t served = ++chunks_served_;
    if (blob->kind == StateKind::snapshot && i % 16 == 15) {
      std::lock_guard<std::mutex> lock(mu_);
      snapshot_used_ = std::chrono::steady_clock::now();
    }
    if (die_after >= 0 && served >= static_cast<uint64_t>(die_after)) ::raise(SIGKILL);
  }
}

// --- client -------------------------------------------------------------------

namespace {

// Dials the donor at `address`, sends `req` and returns its answer (a
// control message: a summary, "pending" or a refusal). `conn` is the
// connection, for the chunks that may follow.
control::Message ask_donor(Transport& t, ConnId& conn, const std::string& address, const control::StateRequest& req,
                           std::chrono::milliseconds timeout) {
  const auto [host, port] = split_host_port(address, "donor state address");
  // A donor that is up answers a dial at once: one we cannot reach (gone, or
  // cut off from us) costs seconds, not the whole timeout, before the next.
  conn = t.connect(host, port, deadline_in(std::min(timeout, std::chrono::milliseconds(10000))));
  Frame f;
  f.type = FrameType::control;
  f.payload = control::encode(req);
  t.send(conn, std::move(f), deadline_in(timeout));
  std::optional<Message> m = t.recv(conn, deadline_in(timeout));
  if (!m) fail("the donor at ", address, " did not answer the ", state_kind_name(static_cast<StateKind>(req.kind)),
               " request in time");
  if (m->frame.type != FrameType::control) fail("the donor at ", address, " answered with a data frame");
  return control::decode(m->frame.payload, address);
}

}  // namespace

int64_t fetch_progress(const std::string& address, const PeerCredentials& secret, std::chrono::milliseconds timeout) {
  Transport t(TransportOptions{secret, std::chrono::milliseconds(10000), timeout, size_t(1) << 20, size_t(1) << 20, 4,
                               [](const std::string&) {}});
  control::StateRequest req;
  req.kind = static_cast<uint8_t>(StateKind::progress);
  ConnId conn = 0;
  const control::Message answer = ask_donor(t, conn, address, req, timeout);
  const auto* info = std::get_if<control::StateInfo>(&answer);
  if (!info || info->kind != req.kind) fail("the donor at ", address, " answered '", control::name(answer), "'");
  t.close(conn, "done");
  return info->outer_step;
}

void fetch_state(StateDownload& d, const std::string& address, const PeerCredentials& secret,
                 std::chrono::milliseconds timeout, int max_bad, std::chrono::milliseconds pending_limit,
                 const std::atomic<bool>* stop) {
  const auto pending_until = std::chrono::steady_clock::now() + pending_limit;
  Transport t(TransportOptions{secret, std::chrono::milliseconds(10000), timeout, size_t(1) << 20,
                               size_t(256) << 20, 4, [](const std::string&) {}});
  for (;;) {
    control::StateRequest req;
    req.kind = static_cast<uint8_t>(d.kind);
    req.outer_step = d.outer_step;
    req.first_chunk = d.next_chunk;
    if (d.started) req.digest = d.digest;
    ConnId conn = 0;
    const control::Message answer = ask_donor(t, conn, address, req, timeout);
    if (const auto* r = std::get_if<control::Refused>(&answer))
      throw DonorHasOtherState(str("the donor at ", address, " refused: ", r->reason));
    if (const auto* p = std::get_if<control::StatePending>(&answer)) {
      t.close(conn, "asking again later");
      if (stop && stop->load()) fail("stopped on request while the donor at ", address, " prepared its snapshot");
      if (std::chrono::steady_clock::now() + std::chrono::milliseconds(p->retry_ms) > pending_until)
        fail("the donor at ", address, " was still preparing its ", state_kind_name(d.kind), " after ",
             pending_limit.count(), " ms");
      std::this_thread::sleep_for(std::chrono::milliseconds(p->retry_ms));
      continue;
    }
    const auto* info = std::get_if<control::StateInfo>(&answer);
    if (!info) fail("the donor at ", address, " answered '", control::name(answer), "' to a state request");
    if (info->kind != static_cast<uint8_t>(d.kind)) fail("the donor at ", address, " sent another kind of state");
    if (!d.started) {
      d.outer_step = info->outer_step;
      d.digest = info->digest;
      d.total_bytes = info->total_bytes;
      d.chunk_bytes = info->chunk_bytes;
      d.n_chunks = info->n_chunks;
      d.bytes.assign(d.total_bytes, 0);
      d.chunk_digests.assign(d.n_chunks, Digest{});
      d.next_chunk = 0;
      d.started = true;
    } else if (info->digest != d.digest || info->total_bytes != d.total_bytes ||
               info->chunk_bytes != d.chunk_bytes || info->outer_step != d.outer_step) {
      throw DonorHasOtherState(str("the donor at ", address, " serves a different ", state_kind_name(d.kind),
                                   " (outer step ", info->outer_step, ") than the one being downloaded (outer step ",
                                   d.outer_step, ")"));
    }
    bool bad = false;
    while (d.next_chunk < d.n_chunks) {
      std::optional<Message> c = t.recv(conn, deadline_in(timeout));
      if (!c) fail("the donor at ", address, " sent no chunk for ", timeout.count(), " ms (chunk ", d.next_chunk,
                   " of ", d.n_chunks, ")");
      if (c->frame.type != FrameType::data) fail("the donor at ", address, " sent a control frame mid-stream");
      std::span<const uint8_t> bytes;
      const StateChunkHeader h = parse_state_chunk(c->frame.payload, bytes, "state chunk from " + address);
      const uint64_t at = static_cast<uint64_t>(d.next_chunk) * d.chunk_bytes;
      const uint64_t want = std::min<uint64_t>(d.chunk_bytes, d.total_bytes - at);
      if (h.kind != d.kind || h.outer_step != d.outer_step || h.index != d.next_chunk || h.count != want)
        fail("state chunk from ", address, ": got chunk ", h.index, " (", h.count, " bytes, outer step ",
             h.outer_step, "), expected chunk ", d.next_chunk, " (", want, " bytes, outer step ", d.outer_step, ")");
      const Digest got = blake2b_256(bytes);
      if (got != h.digest) {
        ++d.bad_chunks;
        if (d.bad_chunks > static_cast<uint64_t>(max_bad))
          fail("state from ", address, ": ", d.bad_chunks, " chunks failed their BLAKE2b check; giving up on this donor");
        bad = true;  // ask again from this chunk on a fresh connection
        break;
      }
      std::memcpy(d.bytes.data() + at, bytes.data(), bytes.size());
      d.chunk_digests[d.next_chunk] = got;
      ++d.next_chunk;
    }
    t.close(conn, bad ? "a chunk failed its check" : "state received");
    if (bad) continue;
    // The chunks' own digests, as computed here, must give the blob's: a
    // donor cannot pass off chunks of another blob under this one's digest.
    if (blob_digest(d.total_bytes, d.chunk_bytes, d.chunk_digests) != d.digest) {
      d.started = false;  // the whole does not match its digest: start over
      d.next_chunk = 0;
      fail("state from ", address, ": the assembled ", state_kind_name(d.kind), " does not match its digest");
    }
    return;
  }
}

}  // namespace intellect
