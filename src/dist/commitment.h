// A dense ring's commitment, in a form the ring successor can audit message
// by message (issue 16, the commitment audit).
//
// What a node commits to is what its ring messages will carry: the ring's
// codec's encoding of its pseudo-gradient, cut as the ring cuts it. Before
// the ring forms a node knows everything of that cut but the ring's size:
// the lanes (ring_segments of the vector over `lanes` parallel rings), the
// chunk (values per message) and the codec. So each lane is cut into leaves
// of `chunk` values from its start (the last one short), each leaf's
// commitment is the SHA-256 of its encoding (leaf_digest says why not
// BLAKE2b), and the ring aligns its
// segments to whole leaves (aligned_segment_begin) whatever its size: each
// reduce-scatter message at step 0 then carries exactly one leaf of its
// sender's own contribution. The announced commitment is the root:
//
//   lane_root = BLAKE2b("intellect lane leaves v2" | u64 lane_elems | leaves)
//   root      = BLAKE2b("intellect pseudo-gradient commitment v3" | u64 total
//                       | u8 compression | u32 block | u32 chunk | u32 lanes
//                       | lane roots)
//
// At the start of each lane every rank sends its successor a leaf message:
// all lane roots and that lane's leaves, signed in node-key runs. The
// successor checks that it hashes to the announced root, then that each
// step-0 message's payload hashes to its leaf. A mismatch goes like a norm
// violation, with the leaf message and the message as evidence
// (ring_evidence.h): both signed by the sender, so they prove it.
//
// Thread-free functions; any thread.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dist/codec.h"
#include "dist/identity.h"

namespace intellect {

using Digest = std::array<uint8_t, 32>;

// How a dense ring will cut and encode a vector.
struct CommitLayout {
  Compression compression = Compression::Int8;  // None, Int8 or Int4
  size_t block = 0;                             // the codec's block (0 for fp32)
  size_t chunk = 0;                             // values per ring message: one leaf
  int lanes = 1;                                // parallel rings, as ring_segments cuts them
};

// A node's commitment and what it sends its successors.
struct LeafCommitment {
  CommitLayout layout;
  uint64_t total_elems = 0;
  std::vector<Digest> lane_roots;           // per lane
  std::vector<std::vector<Digest>> leaves;  // per lane, per leaf
  Digest root{};
  // Per lane, every leaf's encoding back to back (commit_leaves with
  // keep_encoded; empty otherwise): the direct pattern sends these very
  // bytes (direct_allreduce.h), so a contribution is encoded once.
  std::vector<std::vector<uint8_t>> encoded;
  // Leaf `i` of lane `lane` as committed (keep_encoded only).
  std::span<const uint8_t> leaf_bytes(size_t lane, size_t i) const;
};

// `keep_encoded` keeps every leaf's encoding (LeafCommitment::encoded), in
// `reuse` when given (the last round's: the same size, so no fresh pages
// to fault in and zero each round).
// `sum_squares` (when given) receives Σ x², summed leaf by leaf in leaf
// order (the same bits for any thread count) while each leaf is still in
// cache from its encoding: a dense node's announced norm without a second
// pass over the vector.
LeafCommitment commit_leaves(std::span<const float> x, const CommitLayout& layout, int threads,
                             double* sum_squares = nullptr, bool keep_encoded = false,
                             std::vector<std::vector<uint8_t>> reuse = {});
Digest leaf_digest(std::span<const uint8_t> encoded);
Digest lane_root(uint64_t lane_elems, std::span<const Digest> leaves);
Digest commitment_root(uint64_t total_elems, const CommitLayout& layout, std::span<const Digest> lane_roots);

// Where segment s of a lane of S values begins in a ring of N when its
// segments are aligned to whole leaves of `chunk` values (the last
// segments may be empty when the lane has fewer leaves than the ring has
// ranks). s = N gives S.
size_t aligned_segment_begin(size_t S, size_t N, size_t chunk, size_t s);

// The first message of each lane, in each direction. Little-endian:
//   u32 magic 'IRCL'  u8 version (1)  u8 flags (bit 0: signed)  u8 compression
//   u8 0  u64 round  u64 total_elems  u64 lane_elems  u32 lane  u32 lanes
//   u32 block  u32 chunk  u32 leaves
// then lanes x 32 bytes of lane roots, leaves x 32 bytes of this lane's
// leaves, and when signed the sender's signature (ring_evidence.h).
struct LeafMessage {
  uint64_t round = 0, total_elems = 0, lane_elems = 0;
  uint32_t lane = 0;
  CommitLayout layout;
  bool is_signed = false;
  std::vector<Digest> lane_roots, leaves;
};
constexpr size_t kLeafHeaderBytes = 52;
constexpr uint32_t kLeafMagic = 0x4c435249;  // "IRCL" in memory order
// Small enough for a data frame with its signature.
constexpr size_t kMaxLeaves = (size_t{64} << 20) / 32 - 4096;

std::vector<uint8_t> encode_leaf_message(const LeafMessage& m, const NodeKey* signer);
// Checks magic, version, flags, the enums, the counts against their caps
// and the size. `what` names the message in errors.
LeafMessage parse_leaf_message(std::span<const uint8_t> msg, const std::string& what);
bool is_leaf_message(std::span<const uint8_t> msg);
// The root the message's lane roots commit to, if its leaves hash to its
// own lane's root (and the counts fit its layout); otherwise why not.
bool leaf_message_root(const LeafMessage& m, Digest* root, std::string* why);

}  // namespace intellect
