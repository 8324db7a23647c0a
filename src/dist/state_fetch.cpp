// The joiner's side of state streaming (state_stream.h): fetch_state's lanes
// and fetch_progress. The donor's side, StateServer, is in state_stream.cpp.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <optional>
#include <thread>

#include "dist/control.h"
#include "dist/state_stream.h"
#include "util/error.h"

namespace intellect {

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

// A lane's connection: a transport of its own, so that its loop thread and
// openers (frame_openers.h) serve this lane's frames while other lanes'
// threads serve theirs. Its inbox holds
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
    std::fprintf(stderr, "[state] fetching the %s on %zu lane(s) of %zu: %s\n", state_kind_name(d.kind),
                 others.size() + 1, lanes, e.what());
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
