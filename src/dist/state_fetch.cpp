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

// The answer of a further donor (stripes) to a request for the blob being
// downloaded: the same step and chunk size, and at least the shared chunks;
// the very same blob when all of it is shared (a round).
void check_further_blob(const control::Message& answer, const StateDownload& d, uint32_t shared_chunks,
                        const std::string& address) {
  if (const auto* r = std::get_if<control::Refused>(&answer))
    throw DonorHasOtherState(str("the further donor at ", address, " refused: ", r->reason));
  const auto* info = std::get_if<control::StateInfo>(&answer);
  if (!info) fail("the further donor at ", address, " answered '", control::name(answer), "'");
  const bool whole = shared_chunks >= d.n_chunks;
  if (info->kind != static_cast<uint8_t>(d.kind) || info->outer_step != d.outer_step ||
      info->chunk_bytes != d.chunk_bytes || info->total_bytes < uint64_t{shared_chunks} * d.chunk_bytes ||
      (whole && info->digest != d.digest))
    throw DonorHasOtherState(str("the further donor at ", address, " serves a ", state_kind_name(d.kind),
                                 " of outer step ", info->outer_step, " that does not share the one being downloaded",
                                 " (outer step ", d.outer_step, ")"));
}

// A range of chunks [first, end) that a lane asks for in one request.
struct Piece {
  uint32_t first = 0, end = 0;
};

// Where a lane fetches from: the joiner's donor (any chunk), or a further
// donor (the shared chunks only; its failures end only its own lanes).
struct Source {
  std::string address;
  bool further = false;
};

// What the lanes of one fetch share. Each chunk is written by the one lane
// that holds its piece, so d's per-chunk fields need no lock.
struct Lanes {
  Lanes(StateDownload& d_, const PeerCredentials& secret_, std::chrono::milliseconds timeout_,
        const StateFetchOptions& opt_, uint32_t shared_chunks_)
      : d(d_), secret(secret_), timeout(timeout_), opt(opt_), shared_chunks(shared_chunks_) {}
  StateDownload& d;
  const PeerCredentials& secret;
  std::chrono::milliseconds timeout;
  const StateFetchOptions& opt;
  const uint32_t shared_chunks;  // chunks [0, shared_chunks) may come from further donors
  std::atomic<uint32_t> have{0};
  std::atomic<uint64_t> bad{0}, redials{0}, striped{0};
  std::mutex mu;
  // Under mu: what no lane holds yet, cut at shared_chunks: the joiner's
  // donor takes its own pieces first, then shared ones beside the further
  // donors.
  std::deque<Piece> own, shared;
  std::exception_ptr error;   // under mu: what ended a lane of the joiner's donor (a final one wins)
  bool final_error = false;   // under mu: no lane can get past it (another blob, credentials, a bad donor, stop)

  bool take(Piece& p, bool further) {
    std::lock_guard<std::mutex> lock(mu);
    if (final_error) return false;
    std::deque<Piece>& q = !further && !own.empty() ? own : shared;
    if (q.empty()) return false;
    p = q.front();
    q.pop_front();
    return true;
  }
  void give_back(Piece p) {
    if (p.first >= p.end) return;
    std::lock_guard<std::mutex> lock(mu);
    (p.end <= shared_chunks ? shared : own).push_front(p);
  }
  bool shared_left() {
    std::lock_guard<std::mutex> lock(mu);
    return !final_error && !shared.empty();
  }
  bool stopped() {
    std::lock_guard<std::mutex> lock(mu);
    return final_error;
  }
  bool own_failed() {
    std::lock_guard<std::mutex> lock(mu);
    return error != nullptr;
  }
  void failed(const Source& src, std::exception_ptr e, bool final) {
    if (src.further) {  // the others take its share; said once per lane
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        note(str("a lane to the further donor at ", src.address, " stopped: ", x.what()));
      }
      return;
    }
    std::lock_guard<std::mutex> lock(mu);
    if (!error || (final && !final_error)) error = std::move(e);
    final_error = final_error || final;
  }
  void note(const std::string& m) const {
    if (opt.log) opt.log(m);
    else std::fprintf(stderr, "[state] %s\n", m.c_str());
  }
};

// A lane that loses its connection (reset, stalled, closed by the donor)
// dials again this many times before it leaves its ranges to the others.
constexpr int kLaneRedials = 2;

// Receives chunks [next, p.end) of the request in flight on `conn`. Returns
// false when a chunk failed its digest (the rest must be asked again, on a
// fresh connection: the donor streams on regardless).
bool receive_piece(Lanes& L, const Source& src, Transport& t, ConnId conn, uint32_t& next, const Piece& p) {
  StateDownload& d = L.d;
  const std::string& address = src.address;
  for (; next < p.end; ++next) {
    if (L.opt.stop && L.opt.stop->load()) fail("stopped on request while fetching the ", state_kind_name(d.kind));
    std::optional<Message> c = t.recv(conn, deadline_in(L.timeout));
    if (!c)
      throw DonorSilent(str("the donor at ", address, " sent no chunk for ", L.timeout.count(), " ms (chunk ", next,
                            " of ", d.n_chunks, ")"));
    if (c->frame.type != FrameType::data) fail("the donor at ", address, " sent a control frame mid-stream");
    if (L.opt.downlink) L.opt.downlink->carry(c->frame.payload.size(), deadline_in(L.timeout));
    std::span<const uint8_t> bytes;
    const StateChunkHeader h = parse_state_chunk(c->frame.payload, bytes, "state chunk from " + address);
    const uint64_t at = static_cast<uint64_t>(next) * d.chunk_bytes;
    const uint64_t want = std::min<uint64_t>(d.chunk_bytes, d.total_bytes - at);
    if (h.kind != d.kind || h.outer_step != d.outer_step || h.index != next || h.count != want)
      fail("state chunk from ", address, ": got chunk ", h.index, " (", h.count, " bytes, outer step ", h.outer_step,
           "), expected chunk ", next, " (", want, " bytes, outer step ", d.outer_step, ")");
    const Digest got = blake2b_256(bytes);
    if (got != h.digest) {
      const uint64_t bad = ++L.bad;
      if (bad > static_cast<uint64_t>(L.opt.max_bad)) {
        L.failed(src,
                 std::make_exception_ptr(Error(str("state from ", address, ": ", bad, " chunks failed their BLAKE2b "
                                                   "check; giving up on this donor"))),
                 true);
        if (src.further) throw DonorHasOtherState(str("the further donor at ", address, " sends corrupted chunks"));
      }
      return false;
    }
    std::memcpy(d.bytes.data() + at, bytes.data(), bytes.size());
    d.chunk_digests[next] = got;
    d.striped[next] = src.further ? 1 : 0;
    if (src.further) ++L.striped;
    d.have[next] = 1;
    ++L.have;
  }
  return true;
}

// Asks for piece p on `conn`; the answer is read by read_answer.
void send_request(Transport& t, ConnId conn, const StateDownload& d, const Piece& p, bool with_digest,
                  std::chrono::milliseconds timeout) {
  control::StateRequest req;
  req.kind = static_cast<uint8_t>(d.kind);
  req.outer_step = d.outer_step;
  req.first_chunk = p.first;
  req.end_chunk = p.end;
  // A further donor's blob has another digest (its own moments, its own
  // header) unless all of it is shared: its answer is checked by step and
  // size instead, its chunks by the whole blob's digest at the end.
  if (with_digest) req.digest = d.digest;
  Frame f;
  f.type = FrameType::control;
  f.payload = control::encode(req);
  t.send(conn, std::move(f), deadline_in(timeout));
}

// One lane: takes pieces until none are left, on `conn` (0: dials its own).
// Each range is asked for as soon as the previous one's summary arrives, so
// the donor streams it right after that one's last chunk: no round trip
// between ranges.
void run_lane(Lanes& L, const Source& src, std::unique_ptr<Transport> t, ConnId conn) {
  const StateDownload& d = L.d;
  int redials = 0;
  std::optional<Piece> ahead;  // asked for on `conn`, not answered yet
  auto give_back_ahead = [&] {
    if (ahead) L.give_back(*ahead);
    ahead.reset();
  };
  const bool with_digest = !src.further || L.shared_chunks >= d.n_chunks;
  auto check_answer = [&](const control::Message& answer) {
    if (src.further) check_further_blob(answer, d, L.shared_chunks, src.address);
    else check_same_blob(answer, d, src.address);
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
      if (!L.take(p, src.further)) break;
    }
    uint32_t next = p.first;
    bool intact = true;
    try {
      if (!asked) {
        if (!t) t = lane_transport(L.secret, L.timeout);
        if (conn == 0) conn = dial_donor(*t, src.address, L.timeout);
        send_request(*t, conn, d, p, with_digest, L.timeout);
      }
      check_answer(read_answer(*t, conn, src.address, d.kind, L.timeout));
      Piece q;
      if (L.take(q, src.further)) {
        ahead = q;
        send_request(*t, conn, d, q, with_digest, L.timeout);
      }
      intact = receive_piece(L, src, *t, conn, next, p);
    } catch (const DonorHasOtherState&) {
      L.give_back({next, p.end});
      give_back_ahead();
      L.failed(src, std::current_exception(), true);
      return;
    } catch (const AuthenticationFailed&) {
      L.give_back({next, p.end});
      give_back_ahead();
      L.failed(src, std::current_exception(), true);
      return;
    } catch (const DonorSilent&) {  // the other lanes may still get through; this one leaves its ranges to them
      L.give_back({next, p.end});
      give_back_ahead();
      L.failed(src, std::current_exception(), false);
      return;
    } catch (const std::exception& e) {  // Error, or out of memory for a frame
      L.give_back({next, p.end});
      give_back_ahead();
      if (conn != 0) t->close(conn, str("giving up this connection: ", e.what()));
      conn = 0;
      if (L.opt.stop && L.opt.stop->load()) {
        L.failed(src, std::current_exception(), true);
        return;
      }
      if (++redials > kLaneRedials) {
        L.failed(src,
                 std::make_exception_ptr(Error(str(e.what(), " (a lane gave up after ", kLaneRedials,
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

// A further donor: its summary (waiting while it prepares its snapshot,
// as long as shared chunks are left to fetch), then `lanes` lanes on the
// shared chunks. Whatever goes wrong ends only this donor's part.
void run_further_donor(Lanes& L, const std::string& address, int lanes) {
  const Source src{address, true};
  const StateDownload& d = L.d;
  std::unique_ptr<Transport> t0;
  ConnId conn0 = 0;
  try {
    t0 = lane_transport(L.secret, L.timeout);
    const auto until = std::chrono::steady_clock::now() + L.opt.stripes.pending_limit;
    for (;;) {
      if (!L.shared_left()) return;
      control::StateRequest req;
      req.kind = static_cast<uint8_t>(d.kind);
      req.outer_step = d.outer_step;
      req.first_chunk = 0;
      req.end_chunk = 0;
      if (L.shared_chunks >= d.n_chunks) req.digest = d.digest;
      conn0 = dial_donor(*t0, address, L.timeout);
      const control::Message answer = ask_donor(*t0, conn0, address, req, L.timeout);
      if (const auto* p = std::get_if<control::StatePending>(&answer)) {
        t0->close(conn0, "asking again later");
        conn0 = 0;
        if (std::chrono::steady_clock::now() + std::chrono::milliseconds(p->retry_ms) > until)
          fail("still preparing its snapshot after ", L.opt.stripes.pending_limit.count(), " ms");
        std::this_thread::sleep_for(std::chrono::milliseconds(p->retry_ms));
        continue;
      }
      check_further_blob(answer, d, L.shared_chunks, address);
      break;
    }
  } catch (const std::exception& e) {
    L.note(str("the further donor at ", address, " does not help with this download: ", e.what()));
    return;
  }
  std::vector<std::thread> more;
  try {
    for (int i = 1; i < lanes; ++i) more.emplace_back(run_lane, std::ref(L), src, nullptr, ConnId{0});
  } catch (const std::exception&) {  // no thread to spare: fewer lanes
  }
  run_lane(L, src, std::move(t0), conn0);
  for (std::thread& t : more) t.join();
}

// The chunks `d` lacks, cut into pieces: many per lane (kPiecesPerLane), so
// a lane that finishes early takes over part of what a slower one would have
// fetched and the download's tail, when only a lane or two still stream and
// one lane alone does not fill a link, is short; and at most kMaxPieceChunks
// each, so that a donor's stream workers turn over every few seconds even at
// 10B (other joiners' requests wait for one). A lane asks for its next piece
// while the current one streams, so small pieces cost no round trips. No
// piece spans the end of the shared chunks.
constexpr uint64_t kMaxPieceChunks = 64;
constexpr uint64_t kPiecesPerLane = 16;

void cut_missing_pieces(Lanes& L, int lanes) {
  const StateDownload& d = L.d;
  uint64_t missing = 0;
  for (uint32_t i = 0; i < d.n_chunks; ++i) missing += d.have[i] ? 0 : 1;
  const uint32_t per_piece = static_cast<uint32_t>(std::clamp<uint64_t>(
      (missing + kPiecesPerLane * static_cast<uint64_t>(lanes) - 1) / (kPiecesPerLane * static_cast<uint64_t>(lanes)), 1,
      kMaxPieceChunks));
  std::lock_guard<std::mutex> lock(L.mu);
  L.own.clear();
  L.shared.clear();
  for (uint32_t i = 0; i < d.n_chunks;) {
    if (d.have[i]) {
      ++i;
      continue;
    }
    const uint32_t limit = i < L.shared_chunks ? L.shared_chunks : d.n_chunks;
    uint32_t end = i;
    while (end < limit && !d.have[end] && end - i < per_piece) ++end;
    (end <= L.shared_chunks ? L.shared : L.own).push_back({i, end});
    i = end;
  }
}

// Every lane of one pass: the donor's `lanes` (the first on `conn0`, when
// given) and each further donor's. Returns with every thread joined.
void run_lanes(Lanes& L, const std::string& address, std::unique_ptr<Transport> t0, ConnId conn0,
               const std::vector<std::string>& further) {
  const StateFetchOptions& opt = L.opt;
  const int further_lanes = L.shared_chunks > 0 ? opt.stripes.lanes * static_cast<int>(further.size()) : 0;
  cut_missing_pieces(L, opt.lanes + further_lanes);
  const Source own{address, false};
  size_t lanes;
  {
    std::lock_guard<std::mutex> lock(L.mu);
    lanes = std::min<size_t>(static_cast<size_t>(opt.lanes), L.own.size() + L.shared.size());
  }
  std::vector<std::thread> others;
  try {
    if (L.shared_chunks > 0)
      for (const std::string& a : further) others.emplace_back(run_further_donor, std::ref(L), a, opt.stripes.lanes);
    for (size_t i = 1; i < lanes; ++i) others.emplace_back(run_lane, std::ref(L), own, nullptr, ConnId{0});
  } catch (const std::exception& e) {  // no thread to spare: the lanes that started do the work
    L.note(str("fetching the ", state_kind_name(L.d.kind), " on fewer lanes than asked: ", e.what()));
  }
  run_lane(L, own, std::move(t0), conn0);
  for (std::thread& t : others) t.join();
  // A further donor's lane that failed after the donor's lanes had run out
  // of pieces gave its range back to nobody: the donor takes it.
  if (!L.own_failed() && L.have.load() < L.d.n_chunks) {
    cut_missing_pieces(L, 1);
    run_lane(L, own, nullptr, ConnId{0});
  }
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
      const auto t = std::chrono::steady_clock::now();
      std::this_thread::sleep_for(std::chrono::milliseconds(p->retry_ms));
      d.prepare_wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
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

  uint32_t shared_chunks = 0;
  if (opt.stripes.shared_bytes > 0 && !opt.stripes.addresses.empty() && d.chunk_bytes > 0)
    shared_chunks = static_cast<uint32_t>(
        std::min<uint64_t>(d.n_chunks, opt.stripes.shared_bytes >= d.total_bytes
                                           ? d.n_chunks
                                           : opt.stripes.shared_bytes / d.chunk_bytes));
  if (d.striped.size() != d.n_chunks) d.striped.assign(d.n_chunks, 0);
  Lanes L(d, secret, timeout, opt, shared_chunks);
  L.have = d.chunks_have;
  L.bad = d.bad_chunks;
  L.redials = d.redials;
  L.striped = d.striped_chunks;
  auto finish_pass = [&] {
    d.chunks_have = L.have.load();
    d.bad_chunks = L.bad.load();
    d.redials = L.redials.load();
    d.striped_chunks = L.striped.load();
    if (!d.done()) {
      if (L.error) std::rethrow_exception(L.error);
      fail("state from ", address, ": the lanes stopped with ", d.n_chunks - d.chunks_have, " of ", d.n_chunks,
           " chunks missing");
    }
  };
  run_lanes(L, address, std::move(t0), conn0, opt.stripes.addresses);
  finish_pass();
  // The chunks' own digests, as computed here, must give the blob's: a
  // donor cannot pass off chunks of another blob under this one's digest.
  if (blob_digest(d.total_bytes, d.chunk_bytes, d.chunk_digests) != d.digest) {
    uint32_t from_further = 0;
    for (uint32_t i = 0; i < d.n_chunks; ++i)
      if (d.striped[i]) {
        d.drop_chunk(i);
        ++from_further;
      }
    if (from_further > 0) {
      // One of the further donors sent other bytes than the donor holds:
      // the donor's digest decides, so its own lanes fetch those chunks.
      L.note(str("the ", state_kind_name(d.kind), " assembled with ", from_further, " chunks from further donors does "
                 "not match the digest of the donor at ", address, ": fetching those chunks from it"));
      L.have = d.chunks_have;
      L.striped -= from_further;
      run_lanes(L, address, nullptr, ConnId{0}, {});
      finish_pass();
    }
  }
  if (blob_digest(d.total_bytes, d.chunk_bytes, d.chunk_digests) != d.digest) {
    d.started = false;  // the whole does not match its digest: start over
    d.chunks_have = 0;
    fail("state from ", address, ": the assembled ", state_kind_name(d.kind), " does not match its digest");
  }
}

}  // namespace intellect
