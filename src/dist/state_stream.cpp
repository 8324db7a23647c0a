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

// Fault injection for the tests (StateServerOptions has the in-process
// ones): INTELLECT_STATE_TEST_CORRUPT=<chunk> flips a byte of that chunk the
// first time it is served; INTELLECT_STATE_TEST_DIE_AFTER=<n> kills the donor
// (SIGKILL) after it has served n chunks.
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

namespace {
constexpr auto kSendTimeout = std::chrono::milliseconds(60000);
// Requests waiting for a worker; one more and the connection that sent it is
// closed (a joiner has a few lanes, each with one request at a time).
constexpr size_t kMaxWaitingRequests = 1024;
}  // namespace

StateServer::StateServer(const PeerCredentials& secret, const std::string& host,
                         std::function<void(const std::string&)> log, StateServerOptions options)
    : log_(std::move(log)),
      opt_(std::move(options)),
      // Inbound: requests only (control frames). Outbound: a few chunks per
      // connection; beyond, a worker waits for its joiner to read.
      transport_(TransportOptions{secret, std::chrono::milliseconds(10000), std::chrono::milliseconds(60000),
                                  size_t(64) << 20, size_t(1) << 20, 64, log_}),
      pacer_(opt_.emulate_link.rate_bytes_per_s) {
  if (opt_.streams == 0 || opt_.streams > 256) fail("state server: streams must be in [1, 256], got ", opt_.streams);
  if (opt_.test_corrupt_chunk < 0) opt_.test_corrupt_chunk = env_long("INTELLECT_STATE_TEST_CORRUPT");
  const uint16_t port = transport_.listen(host, 0);
  address_ = host + ":" + std::to_string(port);
  dispatcher_ = std::thread([this] { dispatch(); });
  for (size_t i = 0; i < opt_.streams; ++i) workers_.emplace_back([this] { work(); });
}

StateServer::~StateServer() {
  stop_ = true;
  work_cv_.notify_all();
  if (dispatcher_.joinable()) dispatcher_.join();
  for (std::thread& w : workers_) w.join();
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

// Takes requests off the transport and queues them for the workers; it never
// waits on a joiner, so a slow one holds up only the worker serving it.
void StateServer::dispatch() {
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
    std::lock_guard<std::mutex> lock(work_mu_);
    if (work_.size() >= kMaxWaitingRequests) {
      note(log_, str("state request from ", transport_.peer(m->conn), " refused: ", work_.size(),
                     " requests are already waiting"));
      transport_.close(m->conn, "too many state requests waiting");
      continue;
    }
    work_.push_back({std::move(*m), std::chrono::steady_clock::now()});
    work_cv_.notify_all();
  }
}

// Serves the oldest request whose connection is not being served already:
// one request at a time per connection keeps its frames in order.
void StateServer::work() {
  std::unique_lock<std::mutex> lock(work_mu_);
  while (!stop_.load()) {
    auto it = std::find_if(work_.begin(), work_.end(), [&](const Request& r) { return busy_.count(r.m.conn) == 0; });
    if (it == work_.end()) {
      work_cv_.wait_for(lock, std::chrono::milliseconds(50));
      continue;
    }
    const Request r = std::move(*it);
    const Message& m = r.m;
    work_.erase(it);
    busy_.insert(m.conn);
    peak_streams_ = std::max(peak_streams_.load(), busy_.size());
    lock.unlock();
    try {
      serve_one(m, r.arrived);
    } catch (const std::exception& e) {  // Error, or out of memory: this connection only
      note(log_, str("state request from ", transport_.peer(m.conn), " failed: ", e.what()));
      transport_.close(m.conn, e.what());
    }
    lock.lock();
    busy_.erase(m.conn);
    work_cv_.notify_all();
  }
}

// One request: the summary, then the chunks of the range asked for. The blob
// is held by shared_ptr, so a newer one published meanwhile does not disturb
// the stream.
void StateServer::serve_one(const Message& m, std::chrono::steady_clock::time_point arrived) {
  const ConnId conn = m.conn;
  const std::string who = transport_.peer(conn);
  if (m.frame.type != FrameType::control) fail("expected a state request, got a ", frame_type_name(m.frame.type), " frame");
  const control::Message msg = control::decode(m.frame.payload, who);
  const auto* req = std::get_if<control::StateRequest>(&msg);
  if (!req) fail("expected a state request, got '", control::name(msg), "'");
  // The request's trip and the answer's: a round trip of the emulated link
  // (already past for a request that waited behind the one before it).
  if (opt_.emulate_link.delay.count() > 0) std::this_thread::sleep_until(arrived + 2 * opt_.emulate_link.delay);
  const StateKind kind = static_cast<StateKind>(req->kind);
  auto send_control = [&](const control::Message& c) {
    Frame f;
    f.type = FrameType::control;
    f.payload = control::encode(c);
    transport_.send(conn, std::move(f), deadline_in(kSendTimeout));
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
  send_chunks(conn, *blob, req->first_chunk,
              static_cast<uint32_t>(std::min<uint64_t>(req->end_chunk, blob->chunks())));
}

void StateServer::send_chunks(ConnId conn, const StateBlob& blob, uint32_t first, uint32_t end) {
  static const long die_after = env_long("INTELLECT_STATE_TEST_DIE_AFTER");
  for (uint32_t i = first; i < end; ++i) {
    if (stop_.load()) fail("the donor's state server is shutting down");
    const size_t at = static_cast<size_t>(i) * blob.chunk_bytes;
    const size_t n = std::min(blob.chunk_bytes, blob.bytes.size() - at);
    StateChunkHeader h;
    h.kind = blob.kind;
    h.outer_step = blob.outer_step;
    h.index = i;
    h.count = static_cast<uint32_t>(n);
    h.digest = blob.chunk_digests[i];
    Frame f;
    f.type = FrameType::data;
    f.payload = encode_state_chunk(h, std::span<const uint8_t>(blob.bytes).subspan(at, n));
    if (opt_.test_corrupt_chunk == static_cast<long>(i) && n > 0 && test_corrupted_.exchange(1) == 0)
      f.payload.back() ^= 0x5a;  // the digest no longer matches: the joiner must ask again
    const Deadline deadline = deadline_in(kSendTimeout);
    pacer_.carry(f.payload.size(), deadline);
    transport_.send(conn, std::move(f), deadline);
    const uint64_t served = ++chunks_served_;
    if (blob.kind == StateKind::snapshot && i % 16 == 15) {
      std::lock_guard<std::mutex> lock(mu_);
      snapshot_used_ = std::chrono::steady_clock::now();
    }
    if (die_after >= 0 && served >= static_cast<uint64_t>(die_after)) ::raise(SIGKILL);
    if (opt_.test_drop_connection_at >= 0 && served >= static_cast<uint64_t>(opt_.test_drop_connection_at) &&
        test_dropped_.exchange(1) == 0)
      fail("test fault: this connection is dropped after chunk ", i);
  }
}

// --- client -------------------------------------------------------------------

void StateDownload::drop_chunk(uint32_t i) {
  INTELLECT_CHECK(i < n_chunks && i < have.size(), "StateDownload::drop_chunk: no chunk ", i);
  if (have[i]) --chunks_have;
  have[i] = 0;
  chunk_digests[i] = Digest{};
}

namespace {

// The donor said nothing for the whole timeout: a lane does not dial again
// (a stalled donor would cost each lane the timeout once more); the caller
// asks the coordinator for another donor.
struct DonorSilent : Error {
  using Error::Error;
};

// A lane's connection: a transport of its own, so that its loop thread opens
// this lane's frames while other lanes' threads open theirs. Its inbox holds
// a couple of chunks; beyond, TCP pushes back on the donor.
std::unique_ptr<Transport> lane_transport(const PeerCredentials& secret, std::chrono::milliseconds timeout) {
  return std::make_unique<Transport>(TransportOptions{secret, std::chrono::milliseconds(10000), timeout,
                                                      size_t(1) << 20, size_t(64) << 20, 4,
                                                      [](const std::string&) {}});
}

ConnId dial_donor(Transport& t, const std::string& address, std::chrono::milliseconds timeout) {
  const auto [host, port] = split_host_port(address, "donor state address");
  // A donor that is up answers a dial at once: one we cannot reach (gone, or
  // cut off from us) costs seconds, not the whole timeout, before the next.
  return t.connect(host, port, deadline_in(std::min(timeout, std::chrono::milliseconds(10000))));
}

// The donor's answer to the request in flight on `conn` (a summary,
// "pending" or a refusal); the chunks asked for follow on the same connection.
control::Message read_answer(Transport& t, ConnId conn, const std::string& address, StateKind kind,
                             std::chrono::milliseconds timeout) {
  std::optional<Message> m = t.recv(conn, deadline_in(timeout));
  if (!m)
    throw DonorSilent(str("the donor at ", address, " did not answer the ", state_kind_name(kind), " request within ",
                          timeout.count(), " ms"));
  if (m->frame.type != FrameType::control) fail("the donor at ", address, " answered with a data frame");
  return control::decode(m->frame.payload, address);
}

control::Message ask_donor(Transport& t, ConnId conn, const std::string& address, const control::StateRequest& req,
                           std::chrono::milliseconds timeout) {
  Frame f;
  f.type = FrameType::control;
  f.payload = control::encode(req);
  t.send(conn, std::move(f), deadline_in(timeout));
  return read_answer(t, conn, address, static_cast<StateKind>(req.kind), timeout);
}

// The answer to a request for more of the blob being downloaded: its summary.
void check_same_blob(const control::Message& answer, const StateDownload& d, const std::string& address) {
  if (const auto* r = std::get_if<control::Refused>(&answer))
    throw DonorHasOtherState(str("the donor at ", address, " refused: ", r->reason));
  const auto* info = std::get_if<control::StateInfo>(&answer);
  if (!info) fail("the donor at ", address, " answered '", control::name(answer), "' to a request for more chunks");
  if (info->kind != static_cast<uint8_t>(d.kind) || info->digest != d.digest || info->total_bytes != d.total_bytes ||
      info->chunk_bytes != d.chunk_bytes || info->outer_step != d.outer_step)
    throw DonorHasOtherState(str("the donor at ", address, " serves a different ", state_kind_name(d.kind),
                                 " (outer step ", info->outer_step, ") than the one being downloaded (outer step ",
                                 d.outer_step, ")"));
}

// A range of chunks [first, end) that a lane asks for in one request.
struct Piece {
  uint32_t first = 0, end = 0;
};

// What the lanes of one fetch share. Each chunk is written by the one lane
// that holds its piece, so d's per-chunk fields need no lock.
struct Lanes {
  Lanes(StateDownload& d_, const std::string& address_, const PeerCredentials& secret_,
        std::chrono::milliseconds timeout_, const StateFetchOptions& opt_)
      : d(d_), address(address_), secret(secret_), timeout(timeout_), opt(opt_) {}
  StateDownload& d;
  const std::string& address;
  const PeerCredentials& secret;
  std::chrono::milliseconds timeout;
  const StateFetchOptions& opt;
  std::atomic<uint32_t> have{0};
  std::atomic<uint64_t> bad{0}, redials{0};
  std::mutex mu;
  std::deque<Piece> pieces;   // under mu: what no lane holds yet
  std::exception_ptr error;   // under mu: what ended a lane (a final one wins)
  bool final_error = false;   // under mu: no lane can get past it (another blob, credentials, a bad donor, stop)

  bool take(Piece& p) {
    std::lock_guard<std::mutex> lock(mu);
    if (final_error || pieces.empty()) return false;
    p = pieces.front();
    pieces.pop_front();
    return true;
  }
  void give_back(Piece p) {
    if (p.first >= p.end) return;
    std::lock_guard<std::mutex> lock(mu);
    pieces.push_front(p);
  }
  bool stopped() {
    std::lock_guard<std::mutex> lock(mu);
    return final_error;
  }
  void failed(std::exception_ptr e, bool final) {
    std::lock_guard<std::mutex> lock(mu);
    if (!error || (final && !final_error)) error = std::move(e);
    final_error = final_error || final;
  }
};

// A lane that loses its connection (reset, stalled, closed by the donor)
// dials again this many times before it leaves its ranges to the others.
constexpr int kLaneRedials = 2;

// Receives chunks [next, p.end) of the request in flight on `conn`. Returns
// false when a chunk failed its digest (the rest must be asked again, on a
// fresh connection: the donor streams on regardless).
bool receive_piece(Lanes& L, Transport& t, ConnId conn, uint32_t& next, const Piece& p) {
  StateDownload& d = L.d;
  for (; next < p.end; ++next) {
    if (L.opt.stop && L.opt.stop->load()) fail("stopped on request while fetching the ", state_kind_name(d.kind));
    std::optional<Message> c = t.recv(conn, deadline_in(L.timeout));
    if (!c)
      throw DonorSilent(str("the donor at ", L.address, " sent no chunk for ", L.timeout.count(), " ms (chunk ", next,
                            " of ", d.n_chunks, ")"));
    if (c->frame.type != FrameType::data) fail("the donor at ", L.address, " sent a control frame mid-stream");
    std::span<const uint8_t> bytes;
    const StateChunkHeader h = parse_state_chunk(c->frame.payload, bytes, "state chunk from " + L.address);
    const uint64_t at = static_cast<uint64_t>(next) * d.chunk_bytes;
    const uint64_t want = std::min<uint64_t>(d.chunk_bytes, d.total_bytes - at);
    if (h.kind != d.kind || h.outer_step != d.outer_step || h.index != next || h.count != want)
      fail("state chunk from ", L.address, ": got chunk ", h.index, " (", h.count, " bytes, outer step ", h.outer_step,
           "), expected chunk ", next, " (", want, " bytes, outer step ", d.outer_step, ")");
    const Digest got = blake2b_256(bytes);
    if (got != h.digest) {
      const uint64_t bad = ++L.bad;
      if (bad > static_cast<uint64_t>(L.opt.max_bad)) {
        L.failed(std::make_exception_ptr(Error(str("state from ", L.address, ": ", bad, " chunks failed their BLAKE2b "
                                                   "check; giving up on this donor"))),
                 true);
      }
      return false;
    }
    std::memcpy(d.bytes.data() + at, bytes.data(), bytes.size());
    d.chunk_digests[next] = got;
    d.have[next] = 1;
    ++L.have;
  }
  return true;
}

// Asks for piece p on `conn`; the answer is read by read_answer.
void send_request(Transport& t, ConnId conn, const StateDownload& d, const Piece& p, std::chrono::milliseconds timeout) {
  control::StateRequest req;
  req.kind = static_cast<uint8_t>(d.kind);
  req.outer_step = d.outer_step;
  req.first_chunk = p.first;
  req.end_chunk = p.end;
  req.digest = d.digest;
  Frame f;
  f.type = FrameType::control;
  f.payload = control::encode(req);
  t.send(conn, std::move(f), deadline_in(timeout));
}

// One lane: takes pieces until none are left, on `conn` (0: dials its own).
// Each range is asked for as soon as the previous one's summary arrives, so
// the donor streams it right after that one's last chunk: no round trip
// between ranges.
void run_lane(Lanes& L, std::unique_ptr<Transport> t, ConnId conn) {
  const StateDownload& d = L.d;
  int redials = 0;
  std::optional<Piece> ahead;  // asked for on `conn`, not answered yet
  auto give_back_ahead = [&] {
    if (ahead) L.give_back(*ahead);
    ahead.reset();
  };
  for (;;) {
    Piece p;
    bool asked = false;
    if (ahead && !L.stopped()) {
      p = *ahead;
      ahead.reset();
      asked = true;
    } else {
      give_back_ahead();
      if (!L.take(p)) break;
    }
    uint32_t next = p.first;
    bool intact = true;
    try {
      if (!asked) {
        if (!t) t = lane_transport(L.secret, L.timeout);
        if (conn == 0) conn = dial_donor(*t, L.address, L.timeout);
        send_request(*t, conn, d, p, L.timeout);
      }
      check_same_blob(read_answer(*t, conn, L.address, d.kind, L.timeout), d, L.address);
      Piece q;
      if (L.take(q)) {
        ahead = q;
        send_request(*t, conn, d, q, L.timeout);
      }
      intact = receive_piece(L, *t, conn, next, p);
    } catch (const DonorHasOtherState&) {
      L.give_back({next, p.end});
      give_back_ahead();
      L.failed(std::current_exception(), true);
      return;
    } catch (const AuthenticationFailed&) {
      L.give_back({next, p.end});
      give_back_ahead();
      L.failed(std::current_exception(), true);
      return;
    } catch (const DonorSilent&) {  // the other lanes may still get through; this one leaves its ranges to them
      L.give_back({next, p.end});
      give_back_ahead();
      L.failed(std::current_exception(), false);
      return;
    } catch (const std::exception& e) {  // Error, or out of memory for a frame
      L.give_back({next, p.end});
      give_back_ahead();
      if (conn != 0) t->close(conn, str("giving up this connection: ", e.what()));
      conn = 0;
      if (L.opt.stop && L.opt.stop->load()) {
        L.failed(std::current_exception(), true);
        return;
      }
      if (++redials > kLaneRedials) {
        L.failed(std::make_exception_ptr(Error(str(e.what(), " (a lane gave up after ", kLaneRedials,
                                                   " fresh connections)"))),
                 false);
        return;
      }
      ++L.redials;
      continue;
    }
    if (!intact) {  // the rest of this range, and the next, on a fresh connection
      L.give_back({next, p.end});
      give_back_ahead();
      t->close(conn, "a chunk failed its check");
      conn = 0;
    }
  }
  if (t && conn != 0) t->close(conn, "state received");
}

// The chunks `d` lacks, cut into pieces: a few per lane, so a lane that
// finishes early takes over part of what a slower one would have fetched, and
// at most kMaxPieceChunks each, so that a donor's stream workers turn over
// every few seconds even at 10B (other joiners' requests wait for one).
constexpr uint64_t kMaxPieceChunks = 64;

std::deque<Piece> missing_pieces(const StateDownload& d, int lanes) {
  const uint64_t missing = d.n_chunks - d.chunks_have;
  const uint32_t per_piece = static_cast<uint32_t>(std::clamp<uint64_t>(
      (missing + 4 * static_cast<uint64_t>(lanes) - 1) / (4 * static_cast<uint64_t>(lanes)), 1, kMaxPieceChunks));
  std::deque<Piece> out;
  for (uint32_t i = 0; i < d.n_chunks;) {
    if (d.have[i]) {
      ++i;
      continue;
    }
    uint32_t end = i;
    while (end < d.n_chunks && !d.have[end] && end - i < per_piece) ++end;
    out.push_back({i, end});
    i = end;
  }
  return out;
}

}  // namespace

int64_t fetch_progress(const std::string& address, const PeerCredentials& secret, std::chrono::milliseconds timeout) {
  Transport t(TransportOptions{secret, std::chrono::milliseconds(10000), timeout, size_t(1) << 20, size_t(1) << 20, 4,
                               [](const std::string&) {}});
  control::StateRequest req;
  req.kind = static_cast<uint8_t>(StateKind::progress);
  const ConnId conn = dial_donor(t, address, timeout);
  const control::Message answer = ask_donor(t, conn, address, req, timeout);
  const auto* info = std::get_if<control::StateInfo>(&answer);
  if (!info || info->kind != req.kind) fail("the donor at ", address, " answered '", control::name(answer), "'");
  t.close(conn, "done");
  return info->outer_step;
}

void fetch_state(StateDownload& d, const std::string& address, const PeerCredentials& secret,
                 std::chrono::milliseconds timeout, const StateFetchOptions& opt) {
  if (opt.lanes < 1 || opt.lanes > 64) fail("fetch_state: lanes must be in [1, 64], got ", opt.lanes);
  const auto pending_until = std::chrono::steady_clock::now() + opt.pending_limit;
  // The summary first (a request for no chunks), on what becomes lane 0's
  // connection: the blob's size and digest, or "pending" while the donor
  // prepares its snapshot.
  std::unique_ptr<Transport> t0 = lane_transport(secret, timeout);
  ConnId conn0 = 0;
  for (;;) {
    control::StateRequest req;
    req.kind = static_cast<uint8_t>(d.kind);
    req.outer_step = d.outer_step;
    req.first_chunk = 0;
    req.end_chunk = 0;
    if (d.started) req.digest = d.digest;
    conn0 = dial_donor(*t0, address, timeout);
    const control::Message answer = ask_donor(*t0, conn0, address, req, timeout);
    if (const auto* p = std::get_if<control::StatePending>(&answer)) {
      t0->close(conn0, "asking again later");
      if (opt.stop && opt.stop->load()) fail("stopped on request while the donor at ", address, " prepared its snapshot");
      if (std::chrono::steady_clock::now() + std::chrono::milliseconds(p->retry_ms) > pending_until)
        fail("the donor at ", address, " was still preparing its ", state_kind_name(d.kind), " after ",
             opt.pending_limit.count(), " ms");
      std::this_thread::sleep_for(std::chrono::milliseconds(p->retry_ms));
      continue;
    }
    if (d.started) {
      check_same_blob(answer, d, address);
      break;
    }
    if (const auto* r = std::get_if<control::Refused>(&answer))
      throw DonorHasOtherState(str("the donor at ", address, " refused: ", r->reason));
    const auto* info = std::get_if<control::StateInfo>(&answer);
    if (!info) fail("the donor at ", address, " answered '", control::name(answer), "' to a state request");
    if (info->kind != static_cast<uint8_t>(d.kind)) fail("the donor at ", address, " sent another kind of state");
    d.outer_step = info->outer_step;
    d.digest = info->digest;
    d.total_bytes = info->total_bytes;
    d.chunk_bytes = info->chunk_bytes;
    d.n_chunks = info->n_chunks;
    d.bytes.clear();
    d.bytes.resize(d.total_bytes);  // not zeroed: the lanes fill every byte
    d.have.assign(d.n_chunks, 0);
    d.chunk_digests.assign(d.n_chunks, Digest{});
    d.chunks_have = 0;
    d.started = true;
    break;
  }

  Lanes L(d, address, secret, timeout, opt);
  L.pieces = missing_pieces(d, opt.lanes);
  L.have = d.chunks_have;
  L.bad = d.bad_chunks;
  L.redials = d.redials;
  const size_t lanes = std::min<size_t>(static_cast<size_t>(opt.lanes), L.pieces.size());
  std::vector<std::thread> others;
  try {
    for (size_t i = 1; i < lanes; ++i) others.emplace_back(run_lane, std::ref(L), nullptr, ConnId{0});
  } catch (const std::exception& e) {  // no thread to spare: the lanes that started do the work
    note(nullptr, str("fetching the ", state_kind_name(d.kind), " on ", others.size() + 1, " lane(s) of ", lanes,
                      ": ", e.what()));
  }
  run_lane(L, std::move(t0), conn0);
  for (std::thread& t : others) t.join();
  d.chunks_have = L.have.load();
  d.bad_chunks = L.bad.load();
  d.redials = L.redials.load();
  if (!d.done()) {
    if (L.error) std::rethrow_exception(L.error);
    fail("state from ", address, ": the lanes stopped with ", d.n_chunks - d.chunks_have, " of ", d.n_chunks,
         " chunks missing");
  }
  // The chunks' own digests, as computed here, must give the blob's: a
  // donor cannot pass off chunks of another blob under this one's digest.
  if (blob_digest(d.total_bytes, d.chunk_bytes, d.chunk_digests) != d.digest) {
    d.started = false;  // the whole does not match its digest: start over
    d.chunks_have = 0;
    fail("state from ", address, ": the assembled ", state_kind_name(d.kind), " does not match its digest");
  }
}

}  // namespace intellect
