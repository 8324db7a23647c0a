// Sparse pseudo-gradients averaged by an all-gather over the ring (for
// diloco.compression "sparse"): every rank encodes its own contribution
// once (top-k of input + error-feedback residual per block, sparse.h), the
// contributions travel round the ring unchanged (N − 1 hops, chunked for
// pipelining), and every rank decodes all N of them and sums them in rank
// order: the same bytes summed in the same order, so the same bits on
// every rank, with no owner step needed.
//
// Why an all-gather and not a ring that re-sparsifies partial sums: a top-k
// of a partial sum drops part of other nodes' values, which no node's error
// feedback holds (each buffer knows only its own node's values), so they
// would be lost for good; and the re-sparsified average would no longer be
// the mean of what was sent, which breaks error feedback's accounting
// (sum sent = sum of pseudo-gradients − residual). The all-gather's cost is
// (N − 1)·C bytes sent per node for a contribution of C bytes, against
// 2(N − 1)/N · 4S for fp32: at density d (2 bytes a kept value) C ≈ 2dS,
// so it sends less than fp32 up to N ≈ 4/d (400 nodes at 1%), and less than
// int8's ring up to N ≈ 1/d. docs/ARCHITECTURE.md has the table.
//
// Messages are checked field by field like the ring's (each rank knows what
// comes next), payloads with sparse_validate before anything is decoded.
// In a node-key run every chunk of a contribution is signed by its author
// (sparse_evidence.h) and forwarded with that signature, so a rank that
// finds a source's chunks above the source's announced norm hands the
// coordinator the author's own signed chunks, whoever forwarded them. Every
// rank verifies each arriving chunk's author signature before it keeps or
// forwards it, and signs what it forwards as its sender, so a forwarder that
// alters another's chunk is caught by the next rank, on its own signature.
// Concurrency and failure as ring_allreduce.h: a sender thread, the calling
// thread receives; any error aborts the link and throws; the input and the
// residual are only read.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dist/ring_allreduce.h"
#include "dist/contribution_check.h"
#include "dist/identity.h"

namespace intellect {

struct SparseRingOptions {
  int rank = 0;
  int world = 1;
  uint64_t round = 0;
  size_t block = 4096;  // values per top-k block (≤ 4096)
  size_t k = 41;        // values kept per full block
  size_t chunk_blocks = 64;  // blocks per message
  // How the contributions are averaged (sparse.h); the same on every rank
  // (diloco.sparse_aggregation), like block and k.
  SparseAggregation aggregation = SparseAggregation::Mean;
  // Each rank's announced norm of its input + residual (by rank; empty or
  // any negative: no checks): every arriving chunk of a source's
  // contribution is checked against that source's own norm times
  // norm_slack (SourceNormCheck, contribution_check.h); a predecessor whose
  // message breaks it is reported as ContributionExceedsAnnouncement.
  std::vector<double> announced_norms;
  double norm_slack = kSparseNormSlack;
  // Which of the round's parallel rings this is (its segment of the
  // vector); in every header, so that a signed chunk is bound to its lane.
  uint32_t lane = 0;
  // Node-key runs (sparse_evidence.h): this rank signs every chunk of its
  // own contribution (and every chunk must arrive signed; without a signer
  // none may), and an accusation carries the offending source's signed
  // chunks, checked here with its key in member_keys (by rank, as the ring
  // announcement carried them; an all-zero key: unknown, no evidence).
  const NodeKey* signer = nullptr;
  std::vector<PublicKey> member_keys;
  // Tests and intellect_chaos --byzantine only: this rank accuses the
  // source of the first chunk it receives, with that honest chunk as
  // evidence (1) or the same with its author signature altered (2).
  int attack_false_accusation = 0;
  // Tests and intellect_chaos --byzantine only: this rank flips the sign of
  // the first kept value of every chunk of another's contribution it
  // forwards (the norm unchanged: within the author's bound), and signs it
  // as its sender (1) or puts a broken sender signature on it (2).
  int attack_alter_forwarded = 0;
  std::chrono::milliseconds message_timeout{60000};
  RingClock::time_point deadline = RingClock::time_point::max();
};

// Blocks per message when the config sets none (mesh chunk_elems 0): 64
// (256K values) in a shared-secret run; in a node-key run at least 64 and
// enough for kKeyedSparseChunkBytes of payload, so that the fixed work a
// signed chunk costs every receiver (one Ed25519 verification and one
// signature, about 80 µs on one core) stays well under the chunk's time on
// a 1 Gbit/s link: at 1% density and 64 blocks it took 1.7× of it
// (PERFORMANCE, "Signed sparse chunks"). The same on every node of a run
// (all keyed or none), like block and k.
constexpr size_t kKeyedSparseChunkBytes = 64 * 1024;
size_t default_sparse_chunk_blocks(size_t block, size_t k, bool keyed);

// This rank's contribution over [offset, offset + count) of the buffer:
// sparse_encoded_bytes(count, block, k) bytes. Error feedback subtracts
// what it decodes to from the residual.
struct SparseSent {
  size_t offset = 0, count = 0, block = 0, k = 0;
  std::vector<uint8_t> encoded;
};

// output = the contributions averaged by opt.aggregation (by default
// (Σ over ranks of decode(contribution)) / world), the same bits on every
// rank. `residual` is empty or of input's size (added before the
// top-k). `sent` (when given) receives this rank's contribution; `carried`
// (when given) every chunk with all ranks' contributions (RingCarried with
// compression Sparse), in offset order, for round_codec.
RingStats sparse_allgather_average(RingLink& link, const SparseRingOptions& opt, std::span<const float> input,
                                   std::span<const float> residual, std::span<float> output,
                                   SparseSent* sent = nullptr, std::vector<RingCarried>* carried = nullptr);

// A node alone (no mesh, or a ring of one): its own contribution, encoded
// and decoded as a ring would (sparse compression is part of the
// algorithm, with its error feedback, not only of the transport), so a
// lone node runs the same SparseLoCo as a swarm. `sent` as above.
void sparse_average_alone(std::span<const float> input, std::span<const float> residual, std::span<float> output,
                          size_t block, size_t k, SparseSent* sent);

// --- message format, exposed for the tests and the fuzz target --------------
// Header, little-endian, 56 bytes (version 3):
//   u32 magic 'ISAG'  u8 version  u8 flags (bit 0: signed)  u16 reserved (0)
//   u64 round  u64 total_elems  u32 world  u32 step  u32 source (whose
//   contribution)  u32 chunk  u32 count  u32 block  u32 k  u32 lane
// then sparse_encoded_bytes(count, block, k) bytes, then, when signed, the
// author's kSparseSignatureBytes (sparse_evidence.h: over the header but the
// step, which each forwarder advances, and the payload) and the sender's
// (over the header, the payload and the author's signature).
struct SparseHeader {
  uint64_t round = 0, total_elems = 0;
  uint32_t world = 0, step = 0, source = 0, chunk = 0, count = 0, block = 0, k = 0, lane = 0;
  bool is_signed = false;
};
constexpr size_t kSparseHeaderBytes = 56;
constexpr size_t kSparseStepOffset = 28;  // of the u32 step field
constexpr size_t kSparseSignatureBytes = kSignatureBytes;
constexpr size_t kSparseSignedBytes = 2 * kSparseSignatureBytes;  // author's, then sender's
// True when `msg` begins with the sparse all-gather's magic.
bool is_sparse_message(std::span<const uint8_t> msg);

std::vector<uint8_t> encode_sparse_header(const SparseHeader& h);
// Parses and checks magic, version, flags, reserved bytes, (block, k), and
// that the payload's size (and the signature's) matches; `what` names the
// message in errors.
SparseHeader parse_sparse_header(std::span<const uint8_t> msg, const std::string& what);
// Fails naming the first field where `got` differs from `want`.
void expect_sparse_header(const SparseHeader& got, const SparseHeader& want, const std::string& what);

}  // namespace intellect
