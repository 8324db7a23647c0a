// One attempt at a ring round, as one node does it: dial the next node and
// accept the previous one (K connections each, one per lane), run each
// lane's all-reduce of its segment on a thread of its own, and gather what
// the lanes carried (the round's wire bytes, for joiners and late nodes).
//
// Parallel rings: with `rings` = K the buffer is cut into K contiguous
// segments (ring_segments) and each is averaged over its own pair of
// connections on its own thread, all K at once (INTELLECT-1 ran one ring per
// GPU). K is a run-wide setting, not a GPU count, so nodes with different
// numbers of GPUs take part in the same rings.
//
// Threads. run() is called by MeshNode's round caller; it starts K - 1 lane
// threads and runs lane 0 itself, joining them all before it returns. While
// it waits for the previous node to dial in, it reads the coordinator's
// messages without waiting (a newer ring supersedes this round, a Late drops
// this node from it). abort_lanes() may be called from any thread (cancel).
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "dist/codec.h"
#include "dist/control.h"
#include "dist/coordinator_client.h"
#include "dist/link_emulation.h"
#include "dist/mesh_outcomes.h"
#include "dist/ring_allreduce.h"
#include "dist/shard_plan.h"
#include "dist/sparse_allgather.h"
#include "dist/transport.h"

namespace intellect {

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
  // Outside the all-reduce's seconds but inside the outer step's: the norm
  // and commitment this node announced before the ring (commit_s), and the
  // round's bytes gathered for joiners after it (keep_s).
  double commit_s = 0.0, keep_s = 0.0;
  // This node's link to its ring successor as this round measured it
  // (link_rate_mbit, ring_order.h; 0: not measured), reported with the next Ready.
  uint64_t link_to = 0;
  double link_mbit = 0.0;
};

struct RingRoundOptions {
  Compression compression = Compression::Int8;
  size_t codec_block = 0;  // 0: default_codec_block(compression)
  size_t sparse_k = 41;
  SparseAggregation sparse_aggregation = SparseAggregation::Mean;
  size_t chunk_elems = 0;  // 0: the codec's default (MeshNodeOptions::chunk_elems)
  int rings = 1;
  // Dense rounds over the direct pattern (direct_allreduce.h): each lane
  // dials every other member and accepts each of them, instead of its ring
  // neighbours. Ignored for sparse (an all-gather over the ring).
  bool direct = false;
  // Codec threads of this node, shared out among its rings (each lane gets
  // at least one: RingOptions::codec_threads); 0: half the machine's
  // hardware threads, at most 16.
  int codec_threads = 0;
  LinkEmulation emulate_link;
  std::chrono::milliseconds message_timeout{60000};
  bool keep_round = true;  // gather the round's wire bytes (the node serves state)
  // Node-key runs: this node's key, which signs its ring messages so that an
  // accusation can carry evidence (ring_evidence.h); empty: shared secret.
  NodeKey signer;
  int attack_false_accusation = 0;  // tests and intellect_chaos only (RingOptions)
  std::function<void(const std::string&)> log;  // the node's log (a config mismatch a peer shows); may be empty
  int attack_alter_forwarded = 0;   // tests and intellect_chaos only (SparseRingOptions)
};

// What a finished attempt leaves: the lanes' traffic and times, and the
// round as the rings carried it (empty unless keep_round).
struct RingAttempt {
  OuterRoundStats stats;  // bytes, seconds, the parts and rings; not ring_size/round/retries
  ByteBuffer round_bytes;
};

// A lane's codec threads when the node has `node_threads` (0: automatic,
// RingRoundOptions::codec_threads) for `lanes` rings.
int lane_codec_threads(int node_threads, int lanes);

// How a dense round of `total` values will cut and encode them (lanes,
// chunk, codec): what a node commits to before the ring forms (commitment.h).
CommitLayout dense_commit_layout(const RingRoundOptions& opt, size_t total);

class RingRound {
 public:
  RingRound(Transport& transport, CoordinatorClient& coordinator, const std::atomic<bool>& cancel,
            RingRoundOptions options);

  // This node's part (member `index` of `ring`) of one attempt at averaging
  // `input` into `output` over the ring; LateForRing when the coordinator
  // re-formed the ring without this node meanwhile. Throws on failure, with
  // the neighbour this node could not dial in `*unreachable` (0: none). A
  // newer ring announced meanwhile fails the attempt and is kept
  // (take_newer_ring).
  std::variant<RingAttempt, LateForRing> run(const control::RingAnnounce& ring, size_t index,
                                             std::span<const float> input, std::span<float> output,
                                             SparseRound* sparse, Deadline deadline, uint64_t* unreachable);

  // A ring for this step announced while an attempt waited for its peers.
  bool has_newer_ring() const { return newer_ring_.has_value(); }
  std::optional<control::RingAnnounce> take_newer_ring();
  // This node's commitment to the next rounds' input (dense rounds that
  // announce norms; null: none, nothing is audited). Kept by the caller.
  void set_commitment(const LeafCommitment* c) { commitment_ = c; }

  // Aborts the lanes of the attempt in progress, and those of any later one
  // as it starts (cancel): its neighbours retry without this node.
  void abort_lanes();

 private:
  struct Connections;
  // Waits for the previous ring node to dial in for `round`, lane `lane`.
  std::variant<ConnId, LateForRing> accept_peer(uint64_t peer_id, uint64_t round, uint32_t lane, int64_t outer_step,
                                                Deadline deadline);
  // An attempt's links: per lane, the ring's one (to the next node, from
  // the previous) or the direct pattern's, one per member (null at this
  // node); the emulated ones among them, per lane; and all of them, for
  // aborting.
  struct LaneLinks {
    std::vector<RingLink*> ring;
    std::vector<std::vector<RingLink*>> direct;
    std::vector<std::vector<EmulatedRingLink*>> emulated;
    std::vector<RingLink*> all;
  };
  std::optional<LateForRing> dial_peers(const control::RingAnnounce& ring, const std::vector<size_t>& to,
                                        const std::vector<size_t>& from, int lanes, Connections& c, Deadline deadline,
                                        uint64_t* unreachable);
  std::vector<RingStats> run_lanes(const control::RingAnnounce& ring, size_t index, LaneLinks& links,
                                   const std::vector<FlatRange>& segs, std::span<const float> input,
                                   std::span<float> output, SparseRound* sparse,
                                   std::vector<std::vector<RingCarried>>* carried, std::optional<PlannedRound>* planned,
                                   Deadline deadline);
  RingOptions dense_lane_options(const control::RingAnnounce& ring, size_t index, int k, int lanes,
                                 const RingAudit* audit, Deadline deadline) const;

  Transport& transport_;
  CoordinatorClient& coordinator_;
  const std::atomic<bool>& cancel_;
  RingRoundOptions opt_;
  std::mutex lanes_mu_;
  std::vector<RingLink*>* lanes_ = nullptr;  // the links of the attempt in progress (under lanes_mu_), for abort_lanes
  std::optional<control::RingAnnounce> newer_ring_;
  std::optional<PublicKey> prev_key_;  // the attempt's predecessor, as its links authenticated it
  const LeafCommitment* commitment_ = nullptr;
  // Connections that arrived before they were waited for: (node, round, lane).
  std::map<std::tuple<uint64_t, uint64_t, uint32_t>, ConnId> early_peers_;
};

}  // namespace intellect
