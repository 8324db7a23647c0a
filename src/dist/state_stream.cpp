#include "dist/state_stream.h"

#include <sodium.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "dist/bytes.h"
#include "dist/control.h"
#include "dist/round_buffers.h"
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

namespace {

// A kept round's bytes, given back to RoundBuffers when the last holder
// (the server's map, or a worker still sending it) lets go: the next
// round is written into its pages.
struct RecycledRoundBytes {
  ByteBuffer bytes;
  explicit RecycledRoundBytes(ByteBuffer b) : bytes(std::move(b)) {}
  RecycledRoundBytes(const RecycledRoundBytes&) = delete;
  RecycledRoundBytes& operator=(const RecycledRoundBytes&) = delete;
  ~RecycledRoundBytes() { RoundBuffers::process().give(std::move(bytes)); }
};

template <typename Owned>
std::shared_ptr<const StateBlob> blob_of(StateKind kind, int64_t outer_step, std::shared_ptr<const Owned> owned,
                                         std::span<const uint8_t> bytes, size_t chunk_bytes) {
  if (chunk_bytes == 0 || chunk_bytes > (size_t{32} << 20)) fail("state blob: chunk size ", chunk_bytes, " is not in (0, 32 MiB]");
  auto b = std::make_shared<StateBlob>();
  b->kind = kind;
  b->outer_step = outer_step;
  b->chunk_bytes = chunk_bytes;
  b->bytes = bytes;
  b->owner = std::move(owned);
  // One pass over the bytes, on several threads: at 10B a snapshot is
  // ~160 GB, and a round (a quarter of that) is published on the training
  // thread.
  b->chunk_digests = chunk_digests(b->bytes, chunk_bytes, std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 16));
  b->digest = blob_digest(b->bytes.size(), chunk_bytes, b->chunk_digests);
  return b;
}

}  // namespace

std::shared_ptr<const StateBlob> make_state_blob(StateKind kind, int64_t outer_step, std::vector<uint8_t> bytes,
                                                 size_t chunk_bytes) {
  auto owned = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  return blob_of(kind, outer_step, owned, {owned->data(), owned->size()}, chunk_bytes);
}

std::shared_ptr<const StateBlob> make_state_blob(StateKind kind, int64_t outer_step, ByteBuffer bytes,
                                                 size_t chunk_bytes) {
  if (kind == StateKind::round) {
    auto owned = std::make_shared<const RecycledRoundBytes>(std::move(bytes));
    return blob_of(kind, outer_step, owned, {owned->bytes.data(), owned->bytes.size()}, chunk_bytes);
  }
  auto owned = std::make_shared<const ByteBuffer>(std::move(bytes));
  return blob_of(kind, outer_step, owned, {owned->data(), owned->size()}, chunk_bytes);
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
  pinned_from_.reset();  // a joiner of an older snapshot takes this one instead
  pin(blob->outer_step + 1);
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
  trim_rounds(keep);
}

std::vector<int64_t> StateServer::rounds_held() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> steps;
  for (const auto& [step, blob] : rounds_) steps.push_back(step);
  return steps;
}

void StateServer::pin(int64_t from) {
  pinned_from_ = pinned_from_ ? std::min(*pinned_from_, from) : from;
  pin_used_ = std::chrono::steady_clock::now();
}

// The newest `keep` rounds, and the rounds a joiner still needs while one
// was served within pin_idle, up to max_pinned_round_bytes in all.
void StateServer::trim_rounds(size_t keep) {
  if (pinned_from_ && std::chrono::steady_clock::now() - pin_used_ > opt_.pin_idle) pinned_from_.reset();
  size_t bytes = 0;
  for (const auto& [step, blob] : rounds_) bytes += blob->bytes.size();
  while (rounds_.size() > keep) {
    const auto oldest = rounds_.begin();
    const bool needed = pinned_from_ && oldest->first >= *pinned_from_ && bytes <= opt_.max_pinned_round_bytes;
    if (needed) break;
    bytes -= oldest->second->bytes.size();
    rounds_.erase(oldest);
  }
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
      const int64_t current = newest_round_ - snapshot_lag_.load();  // the outer step this node's state is at
      const bool fresh = req->outer_step < 0 && req->digest == none;
      // A joiner striping its download (state_fetch.cpp) asks each further
      // donor for the snapshot of its own donor's step: this node takes one
      // when that is where it is, as for a new joiner.
      const bool striped = req->outer_step >= 0 && req->digest == none && req->outer_step == current &&
                           (!snapshot_ || snapshot_->outer_step < current);
      if ((fresh && (!snapshot_ || snapshot_->outer_step < current)) || striped) {
        // A new joiner, and nothing current to give it: the trainer takes a
        // snapshot after its next inner step.
        snapshot_wanted_ = true;
        pending = true;
      }
      blob = snapshot_;
      if (blob && req->outer_step >= 0 && blob->outer_step != req->outer_step) blob.reset();
      if (blob) {
        snapshot_used_ = std::chrono::steady_clock::now();
        pin(blob->outer_step + 1);
      }
      have = snapshot_ ? str("snapshot of outer step ", snapshot_->outer_step) : "no snapshot";
    } else {
      auto it = rounds_.find(req->outer_step);
      if (it != rounds_.end()) blob = it->second;
      // A joiner catching up (or a late node): the rounds after this one
      // are next.
      if (pinned_from_ || blob) pin(req->outer_step);
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
    f.payload = encode_state_chunk(h, blob.bytes.subspan(at, n));
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

}  // namespace intellect
