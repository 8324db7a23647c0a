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
// keeps what it has and continues from the next chunk with another donor,
// provided that donor serves the same blob (same kind, step and digest of the
// whole).
//
// Wire: the request and the answer's summary are control frames; chunks are
// data frames: magic 'ISTC', u8 version, u8 kind, u16 reserved (0), i64 outer
// step, u32 index, u32 count, 32-byte digest, then count bytes. Every field
// is checked against the summary before the bytes are used.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dist/state_chunk.h"
#include "dist/transport.h"
#include "util/error.h"

namespace intellect {

// A published blob: the bytes and the digest of each chunk and of the whole.
struct StateBlob {
  StateKind kind = StateKind::snapshot;
  int64_t outer_step = 0;
  std::vector<uint8_t> bytes;
  size_t chunk_bytes = 0;
  std::vector<Digest> chunk_digests;
  Digest digest{};  // blob_digest() of the chunk digests: a second donor proves it serves the same blob
  size_t chunks() const { return chunk_digests.size(); }
};
std::shared_ptr<const StateBlob> make_state_blob(StateKind kind, int64_t outer_step, std::vector<uint8_t> bytes,
                                                 size_t chunk_bytes = size_t{4} << 20);

// --- serving ----------------------------------------------------------------
class StateServer {
 public:
  // Listens on host (port 0: any free port) with the run's secret.
  StateServer(const PeerCredentials& secret, const std::string& host, std::function<void(const std::string&)> log);
  ~StateServer();
  StateServer(const StateServer&) = delete;
  StateServer& operator=(const StateServer&) = delete;
  std::string address() const { return address_; }

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
  // A completed round's averaged pseudo-gradient; the newest `keep` are kept
  // (a joiner needs only the rounds completed while it downloaded the
  // snapshot, and each is 4 bytes a parameter: 40 GB at 10B).
  void publish_round(std::shared_ptr<const StateBlob> blob, size_t keep = 2);
  void set_progress(int64_t steps_done) { progress_ = steps_done; }
  uint64_t chunks_served() const { return chunks_served_.load(); }

 private:
  void serve();
  void serve_one(const Message& request);

  std::function<void(const std::string&)> log_;
  Transport transport_;
  std::string address_;
  mutable std::mutex mu_;
  std::shared_ptr<const StateBlob> snapshot_;
  std::map<int64_t, std::shared_ptr<const StateBlob>> rounds_;
  int64_t newest_round_ = -1;                             // under mu_
  std::chrono::steady_clock::time_point snapshot_used_{};  // under mu_
  std::atomic<bool> snapshot_wanted_{false};
  std::atomic<int64_t> snapshot_lag_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> chunks_served_{0};
  std::atomic<int64_t> progress_{0};
  std::thread thread_;
};

// --- fetching ---------------------------------------------------------------
// What a joiner has of one blob so far; carried from one donor to the next.
struct StateDownload {
  StateKind kind = StateKind::snapshot;
  int64_t outer_step = -1;  // for a round: which one; for a snapshot: -1 = the donor's newest
  bool started = false;     // the summary below is known
  Digest digest{};
  uint64_t total_bytes = 0, chunk_bytes = 0;
  uint32_t n_chunks = 0, next_chunk = 0;
  std::vector<uint8_t> bytes;
  std::vector<Digest> chunk_digests;  // of the chunks received so far, as computed here
  uint64_t bad_chunks = 0;  // digests that did not match (fetched again)
  bool done() const { return started && next_chunk == n_chunks; }
};

// Fetches the rest of `d` from the StateServer at `address`. Returns normally
// when complete; throws Error when the donor fails, is gone, or serves a
// different blob (the download keeps what it had). A chunk whose digest does
// not match is fetched again, up to `max_bad` times in all.
// A donor that answers "pending" (preparing the snapshot) is asked again,
// for up to `pending_limit` in all, or until *stop is set.
void fetch_state(StateDownload& d, const std::string& address, const PeerCredentials& secret,
                 std::chrono::milliseconds timeout, int max_bad = 8,
                 std::chrono::milliseconds pending_limit = std::chrono::minutes(10),
                 const std::atomic<bool>* stop = nullptr);

// The donor does not have what was asked (refused), or serves another blob
// than the one being resumed: a download from another donor must start over.
struct DonorHasOtherState : Error {
  using Error::Error;
};
// The donor's inner steps done, as it last reported them.
int64_t fetch_progress(const std::string& address, const PeerCredentials& secret, std::chrono::milliseconds timeout);

}  // namespace intellect
