// A training node's side of the mesh, made of three parts with one job each:
//  - CoordinatorClient (coordinator_client.h): joins the run, beats on its
//    own thread, reconnects to a restarted coordinator, reads its control
//    messages (rewinds, eviction);
//  - RingRound (ring_round.h): one attempt at a round: dials the ring's next
//    node, accepts the previous one, runs the lanes, gathers the round's bytes;
//  - StateClient and StateDonor (state_client.h): the run's state and rounds
//    fetched from donors, and served to joiners and late nodes.
// MeshNode ties them into the calls a trainer makes: average() reports
// ready, waits for the ring the coordinator announces, averages in it and,
// when an attempt fails, reports it and retries on the ring the coordinator
// re-forms, a bounded number of times. An attempt that completes here is
// applied only once the coordinator commits it (every member still in the
// run completed it); one another member failed is redone here too, so
// every surviving node applies the same round. The coordinator never
// carries bulk data.
//
// Threads. The node's own threads: the heartbeat (CoordinatorClient), the
// ring lanes of a round (RingRound), the snapshot worker and the
// StateServer's loop (StateDonor). Its callers:
//  - the "round calls" (average, fetch_state, fetch_round_once,
//    donor_progress, poll_coordinator, decode_round_into, publish_round)
//    read the coordinator's connection and keep per-round state (a ring
//    announced early, peers that dialled early, the donor, the newest round's
//    bytes): one thread at a time makes them. With DiLoCo's overlap that is
//    OuterSync's round thread while a round is in flight and the training
//    thread between rounds; a second caller at the same time is refused
//    with an Error (a programming error, never a wait);
//  - publish_snapshot: one caller at a time (OuterSync's snapshot copier,
//    which copies the state off the training thread); leave: the training thread;
//  - cancel, report_hash, set_held_step, set_progress, set_status, snapshot_wanted,
//    drop_idle_snapshot, rewinds, welcome: any thread.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "dist/control.h"
#include "dist/coordinator_client.h"
#include "dist/link_emulation.h"
#include "dist/mesh_outcomes.h"
#include "dist/ring_round.h"
#include "dist/state_client.h"
#include "dist/state_stream.h"
#include "dist/transport.h"
#include "util/error.h"

namespace intellect {

struct MeshNodeOptions {
  std::string coordinator;                // "host:port"
  std::string listen = "127.0.0.1:0";     // where peers dial this node (port 0: any free one)
  std::string name;
  // The outer step of the state this node holds as it joins (a resumed
  // checkpoint's; -1: nothing): a coordinator that has formed no ring yet
  // counts a joiner holding the run's newest step as in step with it.
  int64_t held_step = -1;
  // The settings every node of the run must share (dist/run_settings.h),
  // sent with the join; a coordinator whose run has others refuses the
  // join, naming them. "": not compared.
  std::string run_settings;
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
  // Dense rounds over the direct pattern (direct_allreduce.h: each
  // contribution sent once to its segment's owner) instead of a ring; the
  // same on every node (diloco.all_reduce).
  bool direct = false;
  // Values per ring message (0: 2^20 for fp32, 2^18 for int8 and int4, whose
  // per-hop decode and re-encode sit on the pipeline's critical path, so
  // shorter messages fill it sooner; sparse: 64 blocks of 4096, or with
  // node keys at least 64 KiB of payload: default_sparse_chunk_blocks). The
  // same on every node.
  size_t chunk_elems = 0;
  // Threads for the rings' codec work, shared out among the rings (0:
  // automatic; RingRoundOptions::codec_threads). Speed only: every node
  // computes the same bytes whatever its count.
  int codec_threads = 0;
  // Tests and benchmarks: the ring traffic this node sends goes through an
  // emulated WAN link (rate shared out among the rings, one-way delay with
  // jitter), and so does the state it serves to joiners (rate shared by its
  // streams, a round trip per request); off by default (link_emulation.h).
  LinkEmulation emulate_link;
  // Connections a download from a donor uses side by side (state_stream.h).
  int state_lanes = 4;
  int state_stripe_donors = 3;  // further donors a joiner's snapshot download uses (StateStripes)
  size_t state_chunk_bytes = size_t{4} << 20;  // the chunks this node's served state is cut into
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
  // And it accuses its ring predecessor falsely in every ring
  // (RingOptions::attack_false_accusation; 0: never).
  int attack_false_accusation = 0;
  // And, in sparse rounds, alters every chunk of another node's
  // contribution it forwards (SparseRingOptions::attack_alter_forwarded).
  int attack_alter_forwarded = 0;
  // And announces a commitment to its pseudo-gradient before attack_scale
  // while its ring reveals (and sends) the leaves of what it sends (dense
  // rounds): its leaf messages contradict its announcement.
  bool attack_commit_unscaled = false;
  // And reports the first attempt of each round call that completes here as
  // failed, as a node whose ring failed at its very last message would (or
  // a node that wants the others to apply different averages): the others
  // may already hold the whole round.
  bool attack_disown_completed_round = false;
  // BENCHMARKS ONLY (bench_allreduce --plaintext): this node's mesh
  // connections (coordinator and ring lanes; state transfers stay sealed)
  // send frames unsealed after the handshake (TransportOptions::
  // unsealed_frames_for_benchmarks). The coordinator must be set alike.
  bool unsealed_frames_for_benchmarks = false;
  // Threads that open this node's sealed mesh frames
  // (TransportOptions::frame_openers): -1 from the cores.
  int frame_openers = -1;
  // The library that seals and opens them (TransportOptions::aead_library).
  AeadLibrary aead_library = AeadLibrary::openssl;
  std::function<void(const std::string&)> log;
  // Set by a signal handler: long waits for a donor give up with
  // StoppedOnRequest instead of running to their deadline. (Every other
  // wait ends on cancel(), which the trainer calls on a stop request.)
  const std::atomic<bool>* stop = nullptr;
};

// What a round call gives: its result, or how the run went another way
// (mesh_outcomes.h). A failure (Error), StoppedOnRequest and
// AuthenticationFailed are thrown.
using RoundResult = std::variant<OuterRoundStats, LateForRing, RewoundTo, Evicted>;
using StateResult = std::variant<StateDownload, RewoundTo, Evicted>;
// For callers that take no part in a run's recovery (tests, benchmarks):
// the round's stats, or an Error saying what happened instead.
OuterRoundStats averaged_or_fail(RoundResult r);

class MeshNode {
 public:
  explicit MeshNode(MeshNodeOptions options);
  ~MeshNode();  // says goodbye (if not yet) and stops the heartbeat
  MeshNode(const MeshNode&) = delete;
  MeshNode& operator=(const MeshNode&) = delete;

  const control::Welcome& welcome() const { return coordinator_->welcome(); }
  uint64_t id() const { return coordinator_->id(); }

  // output = average of every ring member's input for this outer step.
  // With sparse compression, `sparse` (required) gives the residual and
  // receives what this node sent, in the attempt the coordinator committed. Late,
  // rewound or evicted instead: output is not the round's average.
  // In place (input and output the very same buffer) saves a copy of the
  // model; then restore_input must rebuild the input before a retry (a
  // failed attempt leaves the buffer part-averaged).
  RoundResult average(int64_t outer_step, const std::string& data_position, std::span<const float> input,
                      std::span<float> output, SparseRound* sparse = nullptr,
                      const std::function<void()>& restore_input = {});
  void report_hash(int64_t outer_step, uint64_t hash);
  void leave(const std::string& reason);

  // Joining a run in progress (welcome().donor_id != 0): fetch a snapshot
  // (outer_step -1: the donor's newest) or one round's average, from the
  // assigned donor, switching donors through the coordinator when one fails
  // and keeping the chunks already received when the next serves the same
  // blob. Rewound or evicted meanwhile: that instead.
  // `shared_bytes`: StateClient::fetch's.
  StateResult fetch_state(StateKind kind, int64_t outer_step, std::chrono::milliseconds give_up,
                          uint64_t shared_bytes = 0);
  // One try at a round's average from the current donor: nullopt when the
  // donor does not have it (not yet completed, or too old) or fails (logged);
  // throws AuthenticationFailed when authentication fails either way (the
  // donor's proof, or the donor refusing this node's).
  std::optional<StateDownload> fetch_round_once(int64_t outer_step);
  // A snapshot for joiners. Returns at once: the blob is hashed and
  // published on a thread of its own; joiners are answered "pending" until
  // then. The caller's copy (OuterSync's snapshot copier) is off the
  // training thread too, but for AdamW's moments.
  void publish_snapshot(int64_t outer_step, ByteBuffer bytes);
  // A joiner asked for a snapshot this node does not have yet: publish one.
  bool snapshot_wanted() const { return donor_ && donor_->snapshot_wanted(); }
  // Frees a snapshot no joiner has fetched from for a while.
  void drop_idle_snapshot() {
    if (donor_) donor_->drop_idle_snapshot();
  }
  // Inner steps done, served to joiners; and the current donor's (nullopt if
  // there is none or it does not answer, logged; AuthenticationFailed thrown
  // when authentication fails either way).
  void set_progress(int64_t steps_done) {
    if (donor_) donor_->set_progress(steps_done);
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
  std::string state_address() const { return donor_ ? donor_->address() : std::string(); }
  uint64_t state_chunks_served() const { return donor_ ? donor_->chunks_served() : 0; }

  // The outer step whose outer parameters this node holds (its own start
  // until it has the run's state; -1: none), told to the coordinator with
  // every heartbeat so it can rewind the run to the newest state a live
  // node holds when every holder of a newer one is gone.
  void set_held_step(int64_t outer_step) { coordinator_->set_held_step(outer_step); }
  // What this node reports with its next heartbeats (the run's status page).
  void set_status(const control::NodeStatus& s) { coordinator_->set_status(s); }
  // Rewinds of the run this node has heard of (with its outer hashes, they
  // tell which attempt at an outer step a hash belongs to).
  uint64_t rewinds() const { return coordinator_->rewinds(); }
  // Reads what the coordinator sent meanwhile (without waiting), for loops
  // that wait on donors only: the outer step the run went back to, if it did.
  std::optional<RewoundTo> poll_coordinator();

  // Ends the round calls under way on another thread, and refuses later
  // ones, with StoppedOnRequest: waits on the coordinator, on peers and on
  // donors give up within a fraction of a second, and a ring in progress is
  // aborted (its neighbours retry without this node); the heartbeat thread
  // stops reconnecting to a coordinator that is away. For a node that
  // stops while a round runs in the background (DiLoCo's overlap), or, on
  // a stop request, while the training thread is in a round (no overlap:
  // OuterSync's StopRelay calls it); leave() still says goodbye afterwards.
  void cancel();
  bool cancelled() const { return cancel_.load(); }

 private:
  RoundResult average_in_ring(int64_t outer_step, const std::string& data_position, std::span<const float> input,
                                  std::span<float> output, SparseRound* sparse, const std::function<void()>& restore_input);
  // Reports ready for `outer_step` (with the pseudo-gradient's announced
  // norm and commitment; sparse: the norm of input + residual, what its
  // top-k keeps values of); `input` may be replaced by what a dishonest
  // test node sends instead (kept in `attacked`).
  control::Ready ready_for(int64_t outer_step, const std::string& data_position, std::span<const float>& input,
                           std::span<const float> residual, std::vector<float>& attacked);
  // The ring for this step newer than round `after`: one announced while the
  // last attempt waited for its peers, or the next the coordinator sends;
  // or late for it, or a rewind to another state than this node's.
  std::variant<control::RingAnnounce, LateForRing, RewoundTo> wait_for_ring(int64_t outer_step, uint64_t after,
                                                                           const control::Ready& ready,
                                                                           Deadline deadline);
  // What the coordinator says of a round this node completed: commit it
  // (apply it), or it was abandoned (another member failed it: redo it, in
  // the ring that replaces it if that was already announced), or late or
  // rewound meanwhile. Waits at most round_timeout, then fails: without the
  // coordinator's word the round's result is not applied.
  struct Committed {};
  struct Abandoned {
    std::optional<control::RingAnnounce> next;
  };
  using Verdict = std::variant<Committed, Abandoned, LateForRing, RewoundTo>;
  Verdict await_verdict(const control::RingAnnounce& ring, const control::Ready& ready);
  // A ring of one: the average is this node's own (sparse still compresses).
  void average_alone(std::span<const float> input, std::span<float> output, SparseRound* sparse) const;
  // A failed attempt: logged, and reported to the coordinator (with the
  // neighbour this node could not dial, or the predecessor it caught sending
  // more than it announced) unless a newer ring already replaced it.
  void report_failed_attempt(const Error& e, const control::RingAnnounce& ring, uint64_t unreachable);

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
  // This node's link to its successor in its last ring, as that ring's
  // traffic measured it (round calls only).
  struct MeasuredLink {
    uint64_t to = 0;
    double mbit = 0.0;
  } measured_;
  // This round's commitment to its encoded chunks (dense rounds; the ring
  // round audits against it), kept for the round's attempts.
  LeafCommitment commitment_;
  RingRoundOptions ring_options_;  // what ring_ was made with (the commitment's layout)
  Transport transport_;
  std::atomic<int> round_callers_{0};
  std::atomic<bool> cancel_{false};
  std::string address_;  // advertised "host:port"
  // In this order: the donor's address goes into the join, and on the way
  // out the coordinator hears the goodbye before the state server stops.
  std::unique_ptr<StateDonor> donor_;  // null unless serve_state
  std::unique_ptr<CoordinatorClient> coordinator_;
  std::unique_ptr<StateClient> state_client_;
  std::unique_ptr<RingRound> ring_;
};

}  // namespace intellect
