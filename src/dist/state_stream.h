// Live state streaming for nodes that join a run in progress.
//
// A donor keeps, in host memory, the state it had right after its latest
// outer step (a snapshot: outer parameters, outer momentum, AdamW moments,
// counters, serialised by the trainer) and the averaged pseudo-gradients of
// the few rounds since. A StateServer, on its own transport (own port, own
// loop thread), serves them while the donor keeps training: the training
// thread only swaps in a new blob after each outer step.
//
// A blob travels in chunks. Each chunk message carries the BLAKE2b-256 of its
// bytes, computed by the donor when the blob was published; the joiner checks
// it on arrival and asks again from a bad chunk. A joiner that loses its donor
// keeps what it has and continues with the chunks it lacks from another
// donor, provided that donor serves the same blob (same kind, step and digest
// of the whole).
//
// Lanes. One TCP connection, one sealing thread and one hashing thread cap a
// transfer far below what loopback or a fast WAN carries (156 MB/s for a
// 4.36 GB snapshot on the H200 host; PCCL pools many connections per peer for
// the same reason). A joiner fetches on several lanes at once: each lane is a
// connection on a transport of its own (its own loop thread and frame
// openers), asks for ranges of chunks from a shared queue (the next one while
// the current one streams, so no round trip separates them), checks their
// digests on its own thread and copies them into place. The donor serves each
// request on one of its stream workers (sealing on that thread), so the lanes'
// encryption, hashing and copies run side by side on both ends.
//
// Wire: the request and the answer's summary are control frames; chunks are
// data frames: magic 'ISTC', u8 version, u8 kind, u16 reserved (0), i64 outer
// step, u32 index, u32 count, 32-byte digest, then count bytes. Every field
// is checked against the summary and the range asked for before the bytes are
// used.
//
// state_stream.cpp serves (StateServer); state_fetch.cpp fetches (lanes).
//
// Threads. StateServer: a dispatcher thread (takes requests off the
// transport, at most one in service per connection) and `streams` workers
// (each serves one request at a time); publish_* and set_*: any thread.
// fetch_state: the caller's thread, plus one thread per lane (and per further
// donor, for its summary and first lane) while it runs,
// joined before it returns.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <optional>
#include <vector>

#include "dist/link_emulation.h"
#include "dist/state_chunk.h"
#include "dist/transport.h"
#include "util/byte_buffer.h"
#include "util/error.h"

namespace intellect {

// A published blob: the bytes and the digest of each chunk and of the whole.
struct StateBlob {
  StateKind kind = StateKind::snapshot;
  int64_t outer_step = 0;
  std::span<const uint8_t> bytes;      // owned by `owner`
  std::shared_ptr<const void> owner;   // a round's std::vector, a snapshot's ByteBuffer
  size_t chunk_bytes = 0;
  std::vector<Digest> chunk_digests;
  Digest digest{};  // blob_digest() of the chunk digests: a second donor proves it serves the same blob
  size_t chunks() const { return chunk_digests.size(); }
};
std::shared_ptr<const StateBlob> make_state_blob(StateKind kind, int64_t outer_step, std::vector<uint8_t> bytes,
                                                 size_t chunk_bytes = size_t{4} << 20);
std::shared_ptr<const StateBlob> make_state_blob(StateKind kind, int64_t outer_step, ByteBuffer bytes,
                                                 size_t chunk_bytes = size_t{4} << 20);

// --- serving ----------------------------------------------------------------
struct StateServerOptions {
  // The size of the chunks a donor's blobs are cut into (each checked on
  // arrival, and the unit a download resumes from).
  size_t chunk_bytes = size_t{4} << 20;
  // Requests served at once (each joiner's lane holds one while it streams);
  // more wait their turn. Each is a thread that seals what it sends.
  size_t streams = 16;
  // The donor's uplink as a WAN, for tests and benchmarks only
  // (mesh.emulate_link_*): every stream's chunks share the rate cap, and
  // each request waits a round trip (twice the one-way delay) before its
  // answer.
  LinkEmulation emulate_link;
  // Fault injection for the tests: flip a byte of this chunk the first time
  // it is served; close the connection that serves the n-th chunk (once).
  // -1: off. INTELLECT_STATE_TEST_CORRUPT=<chunk> sets the first.
  long test_corrupt_chunk = -1;
  long test_drop_connection_at = -1;
  // Rounds newer than a snapshot a joiner is still fetching, or than a round
  // a joiner catching up asked for, are kept beyond publish_round's `keep`
  // while such a joiner was served within `pin_idle`: a joiner needs every
  // round completed while it downloaded, and a download over a WAN link can
  // take many rounds. Up to this many bytes of rounds in all; past it the
  // oldest go, and a joiner that needed them takes a newer snapshot.
  size_t max_pinned_round_bytes = size_t{8} << 30;
  std::chrono::milliseconds pin_idle{60000};
};

class StateServer {
 public:
  // Listens on host (port 0: any free port) with the run's secret.
  StateServer(const PeerCredentials& secret, const std::string& host, std::function<void(const std::string&)> log,
              StateServerOptions options = {});
  ~StateServer();
  StateServer(const StateServer&) = delete;
  StateServer& operator=(const StateServer&) = delete;
  std::string address() const { return address_; }
  size_t chunk_bytes() const { return opt_.chunk_bytes; }

  // The snapshot a joiner should start from (replaces the previous one).
  // Snapshots are taken on demand: a request for the newest snapshot when
  // there is none, or only one older than the newest round, is answered
  // "pending" and raises snapshot_wanted() until the trainer publishes one.
  void publish_snapshot(std::shared_ptr<const StateBlob> blob);
  bool snapshot_wanted() const { return snapshot_wanted_.load(); }
  // How many rounds a current snapshot may be older than the newest round
  // (0: none). A node that applies each round one round late (DiLoCo with
  // overlap) holds outer step k - 1 while it already serves round k; a
  // joiner takes both, so that snapshot is current.
  void set_snapshot_lag(int64_t rounds) { snapshot_lag_ = rounds; }
  // Frees the snapshot when no chunk of it was served for `idle` (a copy of
  // the whole state is too big to keep for joiners that may never come).
  void drop_idle_snapshot(std::chrono::milliseconds idle);
  // A completed round's averaged pseudo-gradient, as the ring carried it;
  // the newest `keep` are kept, and, while a joiner fetches state, every
  // round it still needs (StateServerOptions::max_pinned_round_bytes).
  void publish_round(std::shared_ptr<const StateBlob> blob, size_t keep = 2);
  // The outer steps of the rounds held now (tests).
  std::vector<int64_t> rounds_held() const;
  void set_progress(int64_t steps_done) { progress_ = steps_done; }
  uint64_t chunks_served() const { return chunks_served_.load(); }
  // The most requests that were in service at once (a joiner's lanes overlap).
  size_t peak_streams() const { return peak_streams_.load(); }

 private:
  void dispatch();
  void work();
  void serve_one(const Message& request, std::chrono::steady_clock::time_point arrived);
  void send_chunks(ConnId conn, const StateBlob& blob, uint32_t first, uint32_t end);

  std::function<void(const std::string&)> log_;
  StateServerOptions opt_;
  Transport transport_;
  LinkPacer pacer_;
  std::string address_;
  mutable std::mutex mu_;
  std::shared_ptr<const StateBlob> snapshot_;
  std::map<int64_t, std::shared_ptr<const StateBlob>> rounds_;
  int64_t newest_round_ = -1;                             // under mu_
  std::chrono::steady_clock::time_point snapshot_used_{};  // under mu_
  // The oldest round a joiner may still need (the round after the snapshot
  // it fetches, or a round it asked for), and when a joiner was last served.
  std::optional<int64_t> pinned_from_;                  // under mu_
  std::chrono::steady_clock::time_point pin_used_{};    // under mu_
  void pin(int64_t from);                               // under mu_
  void trim_rounds(size_t keep);                        // under mu_
  std::atomic<bool> snapshot_wanted_{false};
  std::atomic<int64_t> snapshot_lag_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> chunks_served_{0};
  std::atomic<int64_t> progress_{0};
  std::atomic<uint64_t> test_corrupted_{0}, test_dropped_{0};
  std::atomic<size_t> peak_streams_{0};
  // Requests waiting for a worker, and the connections being served (a
  // connection's next request waits until its previous one is answered).
  std::mutex work_mu_;
  std::condition_variable work_cv_;
  struct Request {
    Message m;
    std::chrono::steady_clock::time_point arrived;
  };
  std::deque<Request> work_;
  std::set<ConnId> busy_;
  std::thread dispatcher_;
  std::vector<std::thread> workers_;
};

// --- fetching ---------------------------------------------------------------
// A download's buffer is written in full by its lanes (every chunk's length
// is checked) before anyone reads it: not zeroed first (util/byte_buffer.h).
using StateBytes = ByteBuffer;

// What a joiner has of one blob so far; carried from one donor to the next.
struct StateDownload {
  StateKind kind = StateKind::snapshot;
  int64_t outer_step = -1;  // for a round: which one; for a snapshot: -1 = the donor's newest
  bool started = false;     // the summary below is known
  Digest digest{};
  uint64_t total_bytes = 0, chunk_bytes = 0;
  uint32_t n_chunks = 0, chunks_have = 0;
  StateBytes bytes;
  std::vector<uint8_t> have;          // per chunk: 1 once received and checked
  std::vector<Digest> chunk_digests;  // of the chunks received so far, as computed here
  uint64_t bad_chunks = 0;  // digests that did not match (fetched again)
  uint64_t redials = 0;     // lanes' connections dialled again after one broke
  std::vector<uint8_t> striped;  // per chunk: 1 when it came from a further donor (stripes)
  uint64_t striped_chunks = 0;   // chunks that came from further donors, in all
  double prepare_wait_s = 0;     // waiting for the donor to prepare the blob ("pending"), in all
  bool done() const { return started && chunks_have == n_chunks; }
  // Forgets chunk i (the tests' stand-in for a donor that died before it).
  void drop_chunk(uint32_t i);
};

// Further donors for the part of a blob that every node holds alike at the
// blob's outer step (a snapshot's outer parameters and momentum: JoinState's
// prefix; a round: all of it). A joiner's own donor is one uplink, and at
// 150m its snapshot is 4.4 GB: side by side, each donor sends a share of the
// prefix while the joiner's donor sends the rest, so the joiner's own link is
// what limits the download.
//
// Trust: the blob's digest is the joiner's donor's (its summary), and every
// chunk, whoever sent it, counts towards the digest the assembled blob must
// match. A further donor that sends other bytes (another step, a faulty or
// dishonest node) is found there: its chunks are dropped and fetched again
// from the joiner's donor. A further donor that refuses, is slow to prepare
// its snapshot, or fails leaves its share to the others.
struct StateStripes {
  std::vector<std::string> addresses;  // further donors' state addresses (not the donor fetch_state is given)
  uint64_t shared_bytes = 0;           // [0, shared_bytes) are alike on every donor; 0: no striping
  int lanes = 2;                       // connections to each further donor
  // A further donor without a snapshot of the step takes one (it answers
  // "pending"); it is waited for this long at most.
  std::chrono::milliseconds pending_limit{30000};
};

struct StateFetchOptions {
  // Connections fetching side by side (fewer when the blob has fewer pieces).
  int lanes = 4;
  StateStripes stripes;
  // The joiner's downlink as a WAN (tests and benchmarks only,
  // mesh.emulate_link_*): every lane's chunks share it, whichever donor
  // sent them. Null: none.
  std::shared_ptr<LinkPacer> downlink;
  // What happened to further donors (refused, failed, sent other bytes);
  // null: stderr.
  std::function<void(const std::string&)> log;
  // Chunks whose digest does not match, fetched again, in all: one more and
  // the donor is given up.
  int max_bad = 8;
  // A donor that answers "pending" (preparing the snapshot) is asked again
  // for this long in all, or until *stop is set.
  std::chrono::milliseconds pending_limit = std::chrono::minutes(10);
  const std::atomic<bool>* stop = nullptr;
};

// Fetches the rest of `d` from the StateServer at `address` (and the shared
// prefix also from options.stripes' further donors). Returns normally
// when complete; throws Error when the donor fails, is gone, or serves a
// different blob (DonorHasOtherState); the download keeps every chunk it
// checked. A lane whose connection breaks dials again (twice at most; not
// after a donor silent for `timeout`); its unfinished range goes back to the
// queue for whichever lane is free. A chunk
// whose digest does not match is fetched again, up to max_bad in all.
// `timeout` bounds every wait on the donor (a dial, an answer, each chunk).
void fetch_state(StateDownload& d, const std::string& address, const PeerCredentials& secret,
                 std::chrono::milliseconds timeout, const StateFetchOptions& options = {});

// The donor does not have what was asked (refused), or serves another blob
// than the one being resumed: a download from another donor must start over.
struct DonorHasOtherState : Error {
  using Error::Error;
};
// The donor's inner steps done, as it last reported them.
int64_t fetch_progress(const std::string& address, const PeerCredentials& secret, std::chrono::milliseconds timeout);

}  // namespace intellect
