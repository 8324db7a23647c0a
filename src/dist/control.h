// The coordinator protocol: typed messages carried in `control` frames.
//
// Payload: u8 message kind, then the kind's fields in a fixed order
// (little-endian; strings as u32 length + bytes with a per-field cap). The
// decoder checks every length against its cap before copying and refuses
// trailing bytes, so a malformed or hostile message is an Error naming the
// field, never a read past the buffer.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "dist/identity.h"

namespace intellect {

namespace control {

inline constexpr size_t kMaxName = 256;         // node names, addresses, reasons
inline constexpr size_t kMaxJson = 64 * 1024;   // data positions
inline constexpr size_t kMaxRing = 4096;        // nodes in one ring
inline constexpr size_t kMaxStripeDonors = 8;   // further donors named in a Welcome

// node -> coordinator: I want to join (address: where peers dial me).
struct Join {
  std::string name, address;
  uint32_t gpus = 1;
  std::string state_address;  // where this node serves its state to joiners (empty: it does not)
  int64_t held_step = -1;     // the outer step of the state it holds (see Heartbeat)
  // The settings every node of the run must share, a JSON object of at most
  // kMaxRunSettingsBytes (dist/run_settings.h); empty: not compared.
  std::string settings;
};
// coordinator -> node
struct Welcome {
  uint64_t node_id = 0, partition = 0, epoch = 0;
  int64_t outer_step = 0;  // the run's current outer step
  uint32_t heartbeat_ms = 2000, timeout_ms = 6000;
  std::string data_position;  // JSON, empty for a fresh partition
  // A run in progress: fetch the state from this donor before training
  // (donor_id 0: nothing to fetch, start from the configured initialisation).
  uint64_t donor_id = 0;
  std::string donor_address;
  uint64_t rewinds = 0;  // how often the run went back to an older outer step (see Rewound)
  // Further donors at the run's outer step (at most kMaxStripeDonors): the
  // part of the state every node holds alike may come from them too, side by
  // side with the donor's own (state_stream.h: stripes).
  struct Donor {
    uint64_t id = 0;
    std::string address;
  };
  std::vector<Donor> stripe_donors;
};
// What a node reports about itself with its heartbeats, for the run's status
// page and metrics (dist/run_status.h). Every number is checked on decode:
// finite, within a plausible range; nothing in it steers the run.
struct NodeStatus {
  int64_t inner_step = 0, total_steps = 0;  // steps done, and train.steps
  bool has_loss = false, has_val_loss = false;
  double loss = 0, val_loss = 0;
  double tokens_per_s = 0;
  uint32_t gpus = 0;           // 0: the CPU backend
  std::string device;          // what it trains on ("NVIDIA H200", "cpu")
  uint64_t memory_bytes = 0;   // in use: device memory, or the process's resident memory on the CPU
  double wall_s = 0;           // this process's training time so far
  double outer_blocked_s = 0;  // of which the training thread waited for outer steps
  double eta_s = -1;           // to train.steps at this node's pace (-1: not known yet)
  // The newest outer step this node took part in (-1: none yet), as its ring saw it.
  int64_t outer_step = -1;
  double allreduce_s = 0;
  uint64_t outer_bytes = 0;  // sent + received
  uint32_t outer_retries = 0;
  // How it joined a run in progress (join_s 0: it did not).
  double join_s = 0;
  uint64_t join_bytes = 0;
};
inline constexpr size_t kMaxDevice = 128;
inline constexpr uint8_t kNodeStatusVersion = 1;

struct Heartbeat {
  uint64_t node_id = 0;
  // The outer step whose outer parameters this node holds: its own start
  // (0, or a resumed checkpoint's) until it has the run's state, then its
  // newest outer step. -1: none. The coordinator rewinds to the newest one
  // held when no live node holds the run's newest step any more.
  int64_t held_step = -1;
  // Absent until the node has something to report (before its first step).
  // On the wire: a trailing block, u8 kNodeStatusVersion then the fields; a
  // heartbeat without it is the 17 bytes it always was.
  std::optional<NodeStatus> status;
};
struct Leave {
  uint64_t node_id = 0;
  std::string reason;
};
// node -> coordinator: my inner steps for outer step `outer_step` are done.
struct Ready {
  uint64_t node_id = 0;
  int64_t outer_step = 0;
  std::string data_position;  // JSON: where this node's data stands
  // The throughput this node measured on its link to its successor in its
  // last ring, from that ring's own traffic (link_to 0: none measured;
  // link_rate_mbit in ring_round.h). The coordinator orders rings by it
  // (ring_order.h). At most 1e7 Mbit/s.
  uint64_t link_to = 0;
  float link_mbit = 0;
  // The L2 norm of this node's pseudo-gradient for this step, and a
  // BLAKE2b-256 commitment to its bytes, announced before any ring forms
  // (norm < 0: not announced). The coordinator leaves out nodes whose norm is
  // an outlier; ring successors check that what arrives stays within it.
  float norm = -1.0f;
  std::array<uint8_t, 32> commitment{};
};
struct RingMember {
  uint64_t node_id = 0;
  std::string address;
  float norm = -1.0f;  // what the member announced (< 0: unknown, nothing is checked)
  // Its mesh.name, for logs and for emulated links to named peers (tests
  // and benchmarks: LinkEmulation::slow_to); at most kMaxName bytes.
  std::string name;
  // Its announced commitment (Ready::commitment): dense rings audit each
  // member's step-0 messages against it (commitment.h).
  std::array<uint8_t, 32> commitment{};
  // Its node key (node-key runs; all zero: none): a sparse round's accuser
  // checks the author's signed chunks with it (sparse_evidence.h).
  PublicKey key{};
};
// coordinator -> ring members: average with these nodes, in this order.
struct RingAnnounce {
  int64_t outer_step = 0;
  uint64_t epoch = 0, round = 0;
  std::vector<RingMember> members;
};
// node -> coordinator: the round failed here (a neighbour vanished or timed out).
struct RingFailed {
  uint64_t node_id = 0;
  int64_t outer_step = 0;
  uint64_t round = 0;
  std::string reason;
  // The ring neighbour this node could not dial (0: none named). A link that
  // does not work between two live nodes (a partition) would fail every
  // round they are neighbours in: the coordinator arranges rings around it.
  uint64_t unreachable = 0;
  // The ring predecessor that sent more than its announced norm allows (0:
  // none), and, in a node-key run, its signed ring messages that show it
  // (ring_evidence.h; at most kMaxEvidenceMessages, kMaxEvidenceBytes in
  // all). The coordinator judges them: it refuses the accused if they hold,
  // the accuser if they do not.
  uint64_t accused = 0;
  std::vector<std::vector<uint8_t>> evidence;
};
// node -> coordinator: round `round` of `outer_step` completed here: this
// node holds the round's whole result, and applies it only once the
// coordinator commits the round (RoundCommit). Sent again after a reconnect.
struct RoundDone {
  uint64_t node_id = 0;
  int64_t outer_step = 0;
  uint64_t round = 0;
};
// coordinator -> ring members: every member of that round still in the run
// completed it, and none reported it failed: apply its result. A round a
// member reported failed is never committed; its members hear of the ring
// that replaces it (or that the step was given up) instead, so every
// surviving node applies the same round.
struct RoundCommit {
  int64_t outer_step = 0;
  uint64_t round = 0;
};
// node -> coordinator: hash of my outer parameters after the step.
struct OuterHash {
  uint64_t node_id = 0;
  int64_t outer_step = 0;
  uint64_t hash = 0;
};
// coordinator -> node: a request was refused (why, for the log).
struct Refused {
  std::string reason;
};
// node -> node, first on a ring connection: who is dialling, for which round,
// and which of the round's parallel rings (lanes) the connection carries.
struct PeerHello {
  uint64_t node_id = 0;
  uint64_t round = 0;
  uint32_t lane = 0;
};
constexpr uint32_t kMaxRingLanes = 64;

// node -> coordinator, on a new connection after losing the old one (the
// coordinator restarted): I am this member, take me back.
struct Rejoin {
  uint64_t node_id = 0;
  std::string name, address, state_address;
  int64_t held_step = -1;
};
// node -> coordinator: my donor failed; name another (not `exclude`).
struct DonorRequest {
  uint64_t node_id = 0, exclude = 0;
};
// coordinator -> node: the donor to use (donor_id 0: none is available now).
struct DonorAssign {
  uint64_t donor_id = 0;
  std::string donor_address;
};
// coordinator -> node: the ring for `outer_step` formed without you (you were
// not ready in time); take that round's average from a donor and go on.
struct Late {
  int64_t outer_step = 0;
};
// coordinator -> nodes: no live node holds the run's newest outer step any
// more (every node that did is gone), so the run goes on from `outer_step`,
// the newest a live node holds. A node holding it goes on from its own state;
// any other takes it from a donor. `rewinds` counts these events in the run.
struct Rewound {
  int64_t outer_step = 0;
  uint64_t rewinds = 0;
};
// joiner -> donor (state connection): send this blob's chunks [first_chunk,
// end_chunk) (an end past the last chunk: to the end; first == end: the
// summary alone). outer_step -1 with a snapshot: the newest. A non-zero
// digest: only that blob. A joiner's lanes each ask for their own ranges, on
// connections of their own; a lane asks for its next range once the current
// one's summary arrived, and the donor serves a connection's requests in order.
struct StateRequest {
  uint8_t kind = 1;  // StateKind
  int64_t outer_step = -1;
  uint32_t first_chunk = 0;
  std::array<uint8_t, 32> digest{};
  uint32_t end_chunk = UINT32_MAX;
};
// donor -> joiner: what follows.
struct StateInfo {
  uint8_t kind = 1;
  int64_t outer_step = 0;
  std::array<uint8_t, 32> digest{};
  uint64_t total_bytes = 0, chunk_bytes = 0;
  uint32_t n_chunks = 0;
};

// donor -> joiner: the snapshot asked for is being prepared (a donor takes
// one only when a joiner asks); ask again after retry_ms.
struct StatePending {
  uint32_t retry_ms = 0;
};

using Message = std::variant<Join, Welcome, Heartbeat, Leave, Ready, RingAnnounce, RingFailed, OuterHash, Refused,
                             PeerHello, DonorRequest, DonorAssign, Late, StateRequest, StateInfo, Rejoin,
                             StatePending, Rewound, RoundDone, RoundCommit>;

std::vector<uint8_t> encode(const Message& m);
// `from` names the sender in errors.
Message decode(const std::vector<uint8_t>& payload, const std::string& from);
const char* name(const Message& m);

}  // namespace control
}  // namespace intellect
