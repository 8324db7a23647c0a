// A training node's side of the mesh: it joins the run at the coordinator,
// keeps a heartbeat going on its own thread, and at each outer step averages
// its pseudo-gradient over the ring the coordinator announces, dialling the
// next node and accepting the previous one peer to peer (the coordinator
// never carries bulk data). A failed round is reported and retried on the
// ring the coordinator re-forms, a bounded number of times.
//
// Parallel rings: with `rings` = K the buffer is cut into K contiguous
// segments (ring_segments) and each is averaged over its own pair of
// connections on its own thread, all K at once (INTELLECT-1 ran one ring per
// GPU). K is a run-wide setting, not a GPU count, so nodes with different
// numbers of GPUs take part in the same rings.
//
// Threads. The node's own threads: the heartbeat (beats, and reconnects to a
// restarted coordinator under reconnect_mu_), the ring lanes of a round, the
// snapshot worker (hashes a snapshot), and the StateServer's loop. Its
// callers:
//  - the "round calls" (average, fetch_state, fetch_round_once,
//    donor_progress, poll_coordinator, decode_round_into, publish_round)
//    read the coordinator's connection and keep per-round state (a ring
//    announced early, peers that dialled early, the donor, the newest round's
//    bytes): one thread at a time makes them. With DiLoCo's overlap that is
//    OuterSync's round thread while a round is in flight and the training
//    thread between rounds; a second caller at the same time is refused
//    with an Error (a programming error, never a wait);
//  - publish_snapshot and leave: the training thread;
//  - cancel, report_hash, set_held_step, set_progress, set_status, snapshot_wanted,
//    drop_idle_snapshot, rewinds, welcome: any thread.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dist/control.h"
#include "dist/link_emulation.h"
#include "dist/ring_allreduce.h"
#include "dist/sparse_allgather.h"
#include "dist/state_stream.h"
#include "dist/transport.h"
#include "util/error.h"

namespace intellect {

struct MeshNodeOptions {
  std::string coordinator;                // "host:port"
  std::string listen = "127.0.0.1:0";     // where peers dial this node (port 0: any free one)
  std::string name;
  PeerCredentials credentials;  // the run secret (converts) or this node's key and the allowlist
  Compression compression = Compression::Int8;
  // The codec's block (0: default_codec_block(compression)); with sparse,
  // the values kept per block (sparse_k_for_density). The same on every node.
  size_t codec_block = 0;
  size_t sparse_k = 41;
  SparseAggregation sparse_aggregation = SparseAggregation::Mean;  // diloco.sparse_aggregation
  std::chrono::milliseconds join_timeout{30000};
  std::chrono::milliseconds round_timeout{300000};   // waiting for a ring, and one all-reduce
  std::chrono::milliseconds message_timeout{60000};
  int max_retries = 3;
  int rings = 1;  // parallel rings (lanes) per round, the same on every node
  // Values per ring message (0: 2^20 for fp32, 2^18 for int8 and int4, whose
  // per-hop decode and re-encode sit on the pipeline's critical path, so
  // shorter messages fill it sooner; sparse: 64 blocks of 4096). The same on
  // every node.
  size_t chunk_elems = 0;
  // Tests and benchmarks: the ring traffic this node sends goes through an
  // emulated WAN link (rate shared out among the rings, one-way delay with
  // jitter); off by default (link_emulation.h).
  LinkEmulation emulate_link;
  bool serve_state = true;  // run a StateServer so that joiners can fetch this node's state
  // DiLoCo with overlap: this node applies each round one round late, so
  // its snapshot (outer step k - 1) may be one round older than the newest
  // round it serves (k), and one more round is kept for joiners.
  bool rounds_applied_late = false;
  std::chrono::milliseconds state_timeout{30000};  // a donor silent this long is given up
  // Announce each pseudo-gradient's norm and commitment with Ready, and check
  // ring predecessors against the announcements (contribution_check.h).
  bool announce_norms = true;
  // Tests and intellect_chaos --byzantine only: this node misbehaves. It
  // sends its pseudo-gradient times attack_scale and announces the norm of
  // what it sends times attack_announce (1, 1: honest).
  double attack_scale = 1.0, attack_announce = 1.0;
  std::function<void(const std::string&)> log;
  // Set by a signal handler: long waits for a donor give up with
  // StoppedOnRequest instead of running to their deadline.
  const std::atomic<bool>* stop = nullptr;
};

// The process was asked to stop (SIGTERM, Ctrl-C) while it waited for the
// run's state: not a failure of the run.
struct StoppedOnRequest : Error {
  using Error::Error;
};

// The coordinator formed this outer step's ring without this node (it was
// still joining, or too slow): take the round's average from a donor.
struct LateForRound : Error {
  LateForRound(int64_t step, const std::string& what) : Error(what), outer_step(step) {}
  int64_t outer_step;
};

// The coordinator no longer counts this node as a member (it was silent past
// the timeout, e.g. stopped, and was evicted): the process should end and be
// started again, which joins the run afresh and fetches the state.
struct EvictedFromRun : Error {
  using Error::Error;
};

// Every node holding the run's newest outer step is gone: the run goes on
// from `outer_step`, the newest a live node holds (control::Rewound). A node
// holding it goes on from its own state; any other takes it from a donor.
struct RunRewound : Error {
  RunRewound(int64_t step, const std::string& what) : Error(what), outer_step(step) {}
  int64_t outer_step;
};

// A round's sparse side (diloco.compression "sparse"): the node's
// error-feedback residual, added to its pseudo-gradient before the top-k,
// and what the round sent, for ErrorFeedback::commit_sent. A ring of one
// compresses too (sparse_average_alone).
struct SparseRound {
  std::span<const float> residual;  // empty, or the input's size; read only
  std::vector<SparseSent> sent;     // out: this node's contribution, one per ring lane
};

struct OuterRoundStats {
  size_t ring_size = 1;
  uint64_t round = 0;
  int retries = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;  // over all rings
  double seconds = 0.0;                         // wall time of the all-reduce (all rings)
  int rings = 1;
  // The last attempt's parts (RingStats), the slowest lane's of each.
  double encode_s = 0.0, recv_wait_s = 0.0, decode_s = 0.0, send_s = 0.0;
};

// "host:port" -> (host, port); fails with a message naming `what`.
std::pair<std::string, uint16_t> split_host_port(const std::string& s, const std::string& what);

class MeshNode {
 public:
  explicit MeshNode(MeshNodeOptions options);
  ~MeshNode();  // says goodbye (if not yet) and stops the heartbeat
  MeshNode(const MeshNode&) = delete;
  MeshNode& operator=(const MeshNode&) = delete;

  const control::Welcome& welcome() const { return welcome_; }
  uint64_t id() const { return welcome_.node_id; }

  // output = average of every ring member's input for this outer step.
  // With sparse compression, `sparse` (required) gives the residual and
  // receives what this node sent, in the attempt that succeeded.
  OuterRoundStats average(int64_t outer_step, const std::string& data_position, std::span<const float> input,
                          std::span<float> output, SparseRound* sparse = nullptr);
  void report_hash(int64_t outer_step, uint64_t hash);
  void leave(const std::string& reason);

  // Joining a run in progress (welcome().donor_id != 0): fetch a snapshot
  // (outer_step -1: the donor's newest) or one round's average, from the
  // assigned donor, switching donors through the coordinator when one fails
  // and keeping the chunks already received when the next serves the same blob.
  StateDownload fetch_state(StateKind kind, int64_t outer_step, std::chrono::milliseconds give_up);
  // One try at a round's average from the current donor: nullopt when the
  // donor does not have it (not yet completed, or too old) or fails (logged);
  // throws AuthenticationFailed when the donor's proof does not check.
  std::optional<StateDownload> fetch_round_once(int64_t outer_step);
  // A snapshot for joiners. Returns at once: the blob is hashed and
  // published on a thread of its own (the caller's copy is all the training
  // thread pays); joiners are answered "pending" until then.
  void publish_snapshot(int64_t outer_step, std::vector<uint8_t> bytes);
  // A joiner asked for a snapshot this node does not have yet: publish one.
  bool snapshot_wanted() const { return state_ && !snapshot_busy_.load() && state_->snapshot_wanted(); }
  // Frees a snapshot no joiner has fetched from for a while.
  void drop_idle_snapshot() {
    if (state_) state_->drop_idle_snapshot(2 * opt_.state_timeout);
  }
  // Inner steps done, served to joiners; and the current donor's (nullopt if
  // there is none or it does not answer, logged; AuthenticationFailed thrown
  // when its proof does not check).
  void set_progress(int64_t steps_done) {
    if (state_) state_->set_progress(steps_done);
  }
  std::optional<int64_t> donor_progress();
  // The round's average as this node's rings carried it (int8: a quarter
  // of the fp32 bytes; int4, sparse: their ring's bytes), exactly what every
  // ring member decoded.
  void publish_round(int64_t outer_step, std::span<const float> averaged);
  // A fetched round (kind round) into `out`, checked; kept to be served on
  // by publish_round, so a late node passes on the same bytes.
  void decode_round_into(const StateDownload& d, std::span<float> out);
  // Where this node's StateServer listens ("" when it serves none).
  std::string state_address() const { return state_ ? state_->address() : std::string(); }
  uint64_t state_chunks_served() const { return state_ ? state_->chunks_served() : 0; }

  // The outer step whose outer parameters this node holds (its own start
  // until it has the run's state; -1: none), told to the coordinator with
  // every heartbeat so it can rewind the run to the newest state a live
  // node holds when every holder of a newer one is gone.
  void set_held_step(int64_t outer_step) { held_step_ = outer_step; }
  // What this node reports with its next heartbeats (the run's status page).
  void set_status(const control::NodeStatus& s) {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_ = s;
  }
  // Rewinds of the run this node has heard of (with its outer hashes, they
  // tell which attempt at an outer step a hash belongs to).
  uint64_t rewinds() const { return rewinds_.load(); }
  // Reads what the coordinator sent meanwhile (without waiting), for loops
  // that wait on donors only; throws RunRewound if the run went back.
  void poll_coordinator();

  // Ends the round calls under way on another thread, and refuses later
  // ones, with StoppedOnRequest: waits on the coordinator, on peers and on
  // donors give up within a fraction of a second, and a ring in progress is
  // aborted (its neighbours retry without this node). For a node that
  // stops while a round runs in the background (DiLoCo's overlap);
  // leave() still says goodbye afterwards.
  void cancel();
  bool cancelled() const { return cancel_.load(); }

 private:
  control::Message recv_control(Deadline deadline);
  void send_control(ConnId conn, const control::Message& m);
  // To the coordinator: on a lost connection, reconnect (Rejoin) and send again.
  void send_coordinator(const control::Message& m);
  // A new connection to a restarted coordinator, unless another thread
  // already replaced `stale`; fails if it does not come back in time or no
  // longer knows this node. Re-sends the request a caller is waiting on.
  void reconnect(ConnId stale);
  // Throws LateForRound when the coordinator re-forms the ring without this node.
  ConnId accept_peer(uint64_t peer_id, uint64_t round, uint32_t lane, int64_t outer_step, Deadline deadline);

  // One round call at a time (see the threads, above): held for the call.
  class RoundCall {
   public:
    RoundCall(MeshNode& n, const char* what);
    ~RoundCall() { n_.round_callers_.fetch_sub(1); }
    RoundCall(const RoundCall&) = delete;
    RoundCall& operator=(const RoundCall&) = delete;

   private:
    MeshNode& n_;
  };
  void throw_if_cancelled(const char* what) const;

  MeshNodeOptions opt_;
  Transport transport_;
  std::atomic<int> round_callers_{0};
  std::atomic<bool> cancel_{false};
  std::mutex lanes_mu_;
  std::vector<RingLink*>* lanes_ = nullptr;  // the links of the round in progress (under lanes_mu_), for cancel()
  std::string address_;  // advertised "host:port"
  std::atomic<ConnId> coord_{0};
  std::mutex reconnect_mu_;
  std::optional<control::Message> pending_;  // what the main thread awaits an answer to (under reconnect_mu_)
  control::Welcome welcome_;
  std::atomic<bool> stop_{false}, left_{false};
  std::atomic<bool> evicted_{false};  // the heartbeat thread learned the coordinator dropped this node
  std::atomic<int64_t> held_step_{-1};
  std::mutex status_mu_;
  std::optional<control::NodeStatus> status_;  // under status_mu_
  std::atomic<uint64_t> rewinds_{0};
  std::mutex rewind_mu_;
  std::optional<int64_t> rewound_to_;  // a rewind not yet thrown to the main thread (under rewind_mu_)
  // A Rewound message, or a Welcome after a reconnect that counts more
  // rewinds than this node has seen (it missed the message).
  void note_rewind(int64_t outer_step, uint64_t rewinds);
  bool note_if_rewound(const control::Message& m);  // true: it was a Rewound
  void throw_if_rewound();
  std::optional<control::RingAnnounce> next_ring_;               // a ring that superseded the current round
  // Connections that arrived before they were waited for: (node, round, lane).
  std::map<std::tuple<uint64_t, uint64_t, uint32_t>, ConnId> early_peers_;
  std::thread heartbeat_;
  std::unique_ptr<StateServer> state_;
  std::thread snapshot_worker_;              // hashes and publishes a snapshot
  std::atomic<bool> snapshot_busy_{false};
  std::vector<uint8_t> last_round_;  // the newest round's wire form (round_codec.h)
  int64_t last_round_step_ = -1;
  uint64_t donor_id_ = 0;
  std::string donor_address_;
  std::string last_fetch_error_;  // fetch_round_once's last logged failure
};

}  // namespace intellect
