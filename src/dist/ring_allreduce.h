// Ring all-reduce (average) of a flat fp32 buffer over N ranks, written
// against an abstract link so the same code runs over in-memory channels in
// the tests and over the TCP transport between nodes.
//
// The buffer is cut into N segments; segment s is [S·s/N, S·(s+1)/N). Each
// segment is cut into chunks of `chunk_elems` values: one message each, the
// unit of pipelining. Reduce-scatter: in step t rank r sends segment r − t
// and adds what it receives (segment r − t − 1) into its own copy, so after
// N − 1 steps it holds the full sum of segment r + 1, which it owns. The owner
// divides by N and, with a lossy codec (int8, int4: codec.h), quantizes that
// average ONCE and replaces its own copy with the decoded values. All-gather: the owner's bytes travel
// round the ring unchanged, so every rank decodes the same bytes and ends
// with bit-identical results. Each rank sends 2(N − 1)/N of the buffer.
//
// Because the order of messages on a link is fixed by (N, S, chunk size),
// each rank knows exactly which message comes next and checks its header
// field by field against that expectation: nothing from the network is
// trusted (sizes, indices, round, and non-finite values are all refused).
//
// Concurrency: one sender thread per call drains the outgoing messages into
// the link, in schedule order, while the calling thread receives and checks
// headers and hands each message to the lane's codec threads
// (RingOptions::codec_threads; 1: the calling thread itself), which check,
// accumulate and re-encode it through the BlockCodec of opt.compression. A
// chunk is forwarded as soon as it has been accumulated, so hop t + 1 of
// chunk c overlaps hop t of chunk c + 1, and with a long enough segment the
// one-way delay is paid about once per round rather than once per step (a
// chunk still takes 2(N − 1) hops: a round lasts at least 2(N − 1) times
// the delay, however fast the link).
//
// Failure: any link error, timeout or invalid message aborts the round on
// this rank with an Error (and aborts the link, so the neighbours fail fast
// rather than at their deadline). The input is never written; the output is
// unspecified after a failure. Retry with a new ring and a new round id.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "util/error.h"
#include "dist/codec.h"
#include "dist/commitment.h"
#include "dist/identity.h"
#include "dist/round_codec.h"
#include "dist/sparse.h"
#include "util/clock.h"

namespace intellect {

using RingClock = std::chrono::steady_clock;

// One send's or receive's deadline: its own timeout, within the round's.
inline RingClock::time_point message_deadline(std::chrono::milliseconds message_timeout,
                                              RingClock::time_point round_deadline) {
  return std::min(RingClock::now() + message_timeout, round_deadline);
}

// One rank's two neighbours. send_to_next and recv_from_prev are called from
// two different threads at once and must be safe to do so. Both throw Error
// on failure or when the deadline passes; abort() may be called from any
// thread and must make calls in progress and later calls throw promptly
// (closing the connections is the natural implementation: it also tells the
// neighbours that this rank gave up).
struct RingLink {
  virtual ~RingLink() = default;
  // Delivers one whole message, in order. The span is valid only during the call.
  virtual void send_to_next(std::span<const uint8_t> msg, RingClock::time_point deadline) = 0;
  // The same, handing the message over: a link that would copy it (into a
  // transport frame) takes the buffer instead. The ring's sender uses this.
  virtual void send_owned_to_next(std::vector<uint8_t>&& msg, RingClock::time_point deadline) {
    send_to_next(msg, deadline);
  }
  // The next whole message from the previous rank, in the order it was sent.
  virtual std::vector<uint8_t> recv_from_prev(RingClock::time_point deadline) = 0;
  virtual void abort() noexcept = 0;
};

// The commitment audit (commitment.h): every member's announced root, by
// rank, and this rank's own commitment. With it a lane cuts its segments on
// whole chunks (aligned_segment_begin), opens with a leaf message each way,
// and checks each step-0 message against its sender's leaf. A lane with
// fewer chunks than the ring has ranks is not audited (every rank must have
// a segment of its own for its first hop to be checked).
struct RingAudit {
  std::vector<Digest> roots;
  const LeafCommitment* own = nullptr;
};

struct RingOptions {
  int rank = 0;
  int world = 1;
  uint64_t round = 0;  // distinct per attempt: a retried round must not accept a stale message
  uint32_t lane = 0;   // which of the round's parallel rings this is (in every header)
  Compression compression = Compression::Int8;  // None, Int8 or Int4 (Sparse: sparse_allgather.h)
  size_t chunk_elems = size_t{1} << 20;  // values per message
  // The codec's block: values per int8 table, or per int4 scale (set it to
  // default_codec_block(Int4) = 64 for int4). Unused for fp32.
  size_t int8_block = size_t{1} << 16;
  // Threads that do this lane's codec work (check, decode and add, encode),
  // each on whole messages, while the lane's sender keeps the link busy
  // (1: all of it on the calling thread, between receives). The result does
  // not depend on it. Whole messages, not OpenMP teams over one message's
  // blocks: teams cost more than they gave (two nodes on two cores: 5.3x
  // slower with teams of two that spin between messages).
  int codec_threads = 1;
  std::chrono::milliseconds message_timeout{60000};  // per send / receive
  // The L2 norm each rank announced for its input (by rank; empty: nothing
  // is checked). Every partial sum that arrives must stay within the sum of
  // its contributors' norms, and every average within their mean, times
  // norm_slack (int8's rounding and fp32 sums); a predecessor whose message
  // breaks that is reported as ContributionExceedsAnnouncement.
  std::vector<double> announced_norms;
  double norm_slack = 1.02;
  // Node-key runs (ring_evidence.h): this rank signs its first-hop messages
  // (reduce-scatter step 0: its own contribution; nullptr: none is signed,
  // and none may arrive signed), and an accusation carries the
  // predecessor's signed messages as evidence, checked here with
  // `prev_key` (the predecessor's key, as its link authenticated it) before
  // they are handed over.
  const NodeKey* signer = nullptr;
  std::optional<PublicKey> prev_key;
  // The direct pattern (direct_allreduce.h): every member's key, by rank, as
  // the coordinator announced them; an accusation is checked with the
  // offender's before it carries evidence. Empty: none carried.
  std::vector<PublicKey> member_keys;
  // Tests and intellect_chaos --byzantine only: this rank accuses its
  // predecessor falsely on the first message it receives, handing over that
  // honest message as evidence (1) or the same with its signature altered (2).
  int attack_false_accusation = 0;
  // Null: no audit (or the norms were not all announced, which turns it off too).
  const RingAudit* audit = nullptr;
  RingClock::time_point deadline = RingClock::time_point::max();  // for the whole round
  // Where this lane's carried chunks go (a donor keeps the round for
  // joiners): chunk i of the lane, in offset order (ring_chunk_counts), is
  // piece carried_first_piece + i of the round, written in place by the
  // codec thread that carried it. Null: none kept, or RingCarried copies
  // (ring_allreduce_average's `carried`; not both).
  PlannedRound* carried_into = nullptr;
  size_t carried_first_piece = 0;
};

// A sender's commitment leaf message for this lane (commitment.h), checked
// against the lane's layout and the root `sender` announced
// (opt.audit->roots): its leaves, or ContributionExceedsAnnouncement naming
// the sender with the message as evidence. Shared with the direct pattern
// (direct_allreduce.h), where every member sends its leaves to every other.
std::vector<Digest> accept_leaf_message(std::span<const uint8_t> msg, const RingOptions& opt, size_t lane_elems,
                                        int sender, const std::string& what);

// Whether a lane of S values is audited (opt.audit, every norm announced,
// and at least a chunk per rank), and where its segment s begins: on whole
// chunks (commitment leaves) when audited, at S·s/N otherwise. Every rank
// decides the same from the sizes. s = world gives S.
bool lane_audited(const RingOptions& opt, size_t S);
size_t lane_segment_begin(const RingOptions& opt, size_t S, bool audited, size_t s);

// How a lane of S values is cut into messages, in offset order: their value
// counts, as LaneRun sends and carries them (the commitment audit aligns
// segments to whole chunks). What a PlannedRound is laid out from.
std::vector<size_t> ring_chunk_counts(const RingOptions& opt, size_t S);

// The previous rank sent a partial sum (or an average) larger than the norms
// its contributors announced allow: it scaled its own contribution beyond
// what it announced, or altered what it forwarded. The round is abandoned.
// `evidence`: the offender's signed messages that break the bound (node-key
// runs, ring_evidence.h), checked by this rank before they are handed over;
// empty when they could not be kept or do not prove it on their own.
struct ContributionExceedsAnnouncement : Error {
  ContributionExceedsAnnouncement(const std::string& what, int offender,
                                  std::vector<std::vector<uint8_t>> evidence_messages = {})
      : Error(what), offender_rank(offender), evidence(std::move(evidence_messages)) {}
  int offender_rank;
  std::vector<std::vector<uint8_t>> evidence;
};

struct RingStats {
  uint64_t bytes_sent = 0, bytes_received = 0;
  uint64_t messages_sent = 0, messages_received = 0;
  double seconds = 0.0;
  // Where the seconds went: encoding messages (int8 quantization or the fp32
  // copy) and checking and decoding (and adding) what arrived, summed over
  // the lane's codec threads; the receiving thread's wait for the previous
  // rank's next message; and the sending thread's time handing messages to
  // the link (backpressure, pacing).
  double encode_s = 0.0, recv_wait_s = 0.0, decode_s = 0.0, send_s = 0.0;
};

// One chunk of the average as the all-gather carried it: its encoding, which
// decodes to exactly the output's values there. A donor keeps these to hand
// a late node or a joiner the round at the ring's size (round_codec.h).
// Sparse rounds carry every rank's contribution (sparse_allgather.h).
struct RingCarried {
  Compression compression = Compression::Int8;
  size_t offset = 0, count = 0;  // values, relative to the input
  size_t block = 0;              // RingOptions::int8_block (sparse: its block)
  size_t k = 0, world = 0;       // sparse only: values kept per block, contributions
  SparseAggregation aggregation = SparseAggregation::Mean;  // sparse only: how they were averaged
  std::vector<uint8_t> encoded;  // codec_encoded_bytes(compression, count, block); sparse: world contributions
};

// output = average over the ring of every rank's input. input and output
// must have the same size on every rank; they are either separate (input
// only read, untouched by a failed round) or the very same span (in place:
// a failed round leaves it part-averaged, and the caller rebuilds it). With world = 1 the output is the input, unquantized. With a lossy
// codec and world > 1, `carried` (when given) receives every chunk's
// encoding, in offset order; otherwise it is left empty.
RingStats ring_allreduce_average(RingLink& link, const RingOptions& opt, std::span<const float> input,
                                 std::span<float> output, std::vector<RingCarried>* carried = nullptr);

// --- message format, exposed for the tests ----------------------------------
// Header, little-endian, 52 bytes:
//   u32 magic 'IRAR'  u8 version (2)  u8 phase (0 reduce-scatter, 1 all-gather;
//   2 and 3 the same of the direct pattern, direct_allreduce.h)
//   u8 compression  u8 flags (bit 0: signed; others 0)  u64 round
//   u64 total_elems  u32 world  u32 step  u32 segment  u32 chunk  u32 count
//   u32 int8_block (the codec's block; 0 for none)  u32 lane
// then the payload: codec_encoded_bytes(compression, count, block) bytes,
// then, when signed, the sender's kRingSignatureBytes signature of all that
// (ring_evidence.h).
struct RingHeader {
  uint8_t phase = 0;
  Compression compression = Compression::None;
  bool is_signed = false;
  uint64_t round = 0;
  uint64_t total_elems = 0;
  uint32_t world = 0, step = 0, segment = 0, chunk = 0, count = 0, int8_block = 0, lane = 0;
};
constexpr size_t kRingHeaderBytes = 52;
constexpr uint8_t kRingPhaseReduceScatter = 0, kRingPhaseAllGather = 1;
constexpr uint8_t kDirectPhaseReduce = 2, kDirectPhaseGather = 3;

std::vector<uint8_t> encode_ring_header(const RingHeader& h);
// Parses and checks magic, version, flags, the enums and that the payload
// size matches count and compression (and the signature, when signed).
// `what` names the message in errors.
RingHeader parse_ring_header(std::span<const uint8_t> msg, const std::string& what);
// Fails naming the first field where `got` differs from `want`.
void expect_ring_header(const RingHeader& got, const RingHeader& want, const std::string& what);

}  // namespace intellect
