// The two sides of a node's state exchange with other nodes, off the ring:
//  - StateClient: this node as a joiner or a late node. It fetches the
//    run's state or one round's average from its current donor, and asks the
//    coordinator for another donor when that one fails.
//  - StateDonor: this node as a donor. Its StateServer (a thread of its own)
//    serves snapshots, rounds and progress; a snapshot is hashed on a worker
//    thread so the training thread pays only for its copy; the newest
//    round's wire bytes are kept until they are published.
//
// Threads. StateClient's calls and StateDonor's round calls (keep_round,
// publish_round) are MeshNode round calls: one thread at a time (a download
// runs its further lanes on threads of its own, joined before it returns).
// StateDonor::publish_snapshot: one caller at a time (OuterSync's snapshot
// copier); snapshot_wanted,
// drop_idle_snapshot, set_progress: any thread.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "dist/coordinator_client.h"
#include "dist/state_stream.h"

namespace intellect {

struct StateClientOptions {
  PeerCredentials credentials;
  std::chrono::milliseconds state_timeout{30000};  // a donor silent this long is given up
  std::function<void(const std::string&)> log;
  // Set by a signal handler: long waits for a donor give up with
  // StoppedOnRequest instead of running to their deadline.
  const std::atomic<bool>* stop = nullptr;
  // Connections a download uses side by side (state_stream.h: lanes).
  int lanes = 4;
  // Further donors named in the Welcome that a snapshot's shared part also
  // comes from (state_stream.h: StateStripes), each on max(1, lanes / 2).
  int stripe_donors = 3;
  // The joiner's downlink as a WAN (mesh.emulate_link_mbit; 0: none):
  // every download's chunks cross it, whichever donor sent them.
  double emulate_downlink_bytes_per_s = 0;
};

class StateClient {
 public:
  // The donor the coordinator named in its Welcome (0: none).
  StateClient(CoordinatorClient& coordinator, const std::atomic<bool>& cancel, StateClientOptions options);

  // A snapshot (outer_step -1: the donor's newest) or one round's average,
  // switching donors through the coordinator when one fails and keeping the
  // chunks already received when the next serves the same blob; or the
  // outer step the run went back to meanwhile.
  // `shared_bytes`: the blob's prefix that every donor holds alike at its
  // step (join_state_shared_bytes for a snapshot; 0: none), fetched from
  // further donors too.
  std::variant<StateDownload, RewoundTo> fetch(StateKind kind, int64_t outer_step, std::chrono::milliseconds give_up,
                                               uint64_t shared_bytes = 0);
  // One try at a round's average from the current donor: nullopt when the
  // donor does not have it or fails (logged once per distinct failure);
  // throws AuthenticationFailed when authentication fails either way.
  std::optional<StateDownload> fetch_round_once(int64_t outer_step);
  // The current donor's inner steps done (nullopt: no donor, or it does not
  // answer, logged; AuthenticationFailed thrown as above).
  std::optional<int64_t> donor_progress();

 private:
  // Asks the coordinator for a donor other than the current one (nullopt:
  // done; else the run went back meanwhile).
  std::optional<RewoundTo> switch_donor(Deadline deadline);
  void log(const std::string& m) const { mesh_log(opt_.log, m); }
  StateFetchOptions fetch_options() const;  // lanes, stop, downlink, log

  CoordinatorClient& coordinator_;
  const std::atomic<bool>& cancel_;
  StateClientOptions opt_;
  uint64_t donor_id_ = 0;
  std::string donor_address_;
  std::vector<control::Welcome::Donor> further_;  // the Welcome's further donors
  std::shared_ptr<LinkPacer> downlink_;           // null: not emulated
  std::string last_fetch_error_;  // fetch_round_once's last logged failure
};

class StateDonor {
 public:
  // Serves on `host` (any free port). `rounds_applied_late`: DiLoCo with
  // overlap, where the snapshot may be one round older than the newest
  // round, and one more round is kept for joiners. `server_options`:
  // streams served at once, an emulated uplink (tests and benchmarks).
  StateDonor(const PeerCredentials& credentials, const std::string& host, bool rounds_applied_late,
             std::chrono::milliseconds state_timeout, std::function<void(const std::string&)> log,
             StateServerOptions server_options = {});
  ~StateDonor();  // waits for the snapshot worker before the server it publishes to goes

  std::string address() const { return server_->address(); }
  uint64_t chunks_served() const { return server_->chunks_served(); }
  void set_progress(int64_t steps_done) { server_->set_progress(steps_done); }

  // Returns at once: the blob is hashed and published on the worker thread;
  // joiners are answered "pending" until then.
  void publish_snapshot(int64_t outer_step, ByteBuffer bytes);
  bool snapshot_wanted() const { return !snapshot_busy_.load() && server_->snapshot_wanted(); }
  void drop_idle_snapshot() { server_->drop_idle_snapshot(2 * state_timeout_); }

  // The round of `outer_step` in its wire form (round_codec.h), as this
  // node's rings carried it or as it was fetched: what publish_round serves.
  void keep_round(int64_t outer_step, ByteBuffer bytes);
  // Serves the round: the kept bytes when they are of this step, else
  // `averaged` in fp32 (a ring of one).
  void publish_round(int64_t outer_step, std::span<const float> averaged);

 private:
  std::unique_ptr<StateServer> server_;
  bool rounds_applied_late_;
  std::chrono::milliseconds state_timeout_;
  std::function<void(const std::string&)> log_;
  std::thread snapshot_worker_;  // hashes and publishes a snapshot
  std::atomic<bool> snapshot_busy_{false};
  ByteBuffer last_round_;  // the newest round's wire form
  int64_t last_round_step_ = -1;
};

}  // namespace intellect
