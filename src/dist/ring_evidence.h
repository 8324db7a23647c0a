// Evidence that a ring predecessor broke its announcement, checkable by a
// third party (the coordinator) without trusting the accuser.
//
// Link keys are symmetric (frame_cipher.h): a successor can show the
// coordinator nothing about what its predecessor sent with them. So in a
// node-key run each first-hop ring message (reduce-scatter step 0: the
// sender's own contribution, where an understated norm and a broken
// commitment show) carries its sender's Ed25519 signature over a
// BLAKE2b-256 digest of the message (header and payload): only the sender's
// key can produce it, and the header binds it to the round, the lane, the
// ring size, the phase, the step, the segment and the chunk. A successor
// whose ContributionCheck fails at step 0 hands over the signed messages
// that break the bound (ContributionCheck keeps the largest of them). A
// violation at a later step (a forwarder inflating a partial sum, an owner
// inflating an average) has no signed messages: the round fails and nobody
// is refused (see judge_accusation). Signing every message would put a
// BLAKE2b pass over all the ring's traffic (bench_evidence: about 40% of
// int8's encoding time on one core); the first hop is 1/(2(N - 1)) of it. The coordinator checks each signature with the accused's
// public key, checks that the messages are what the accuser must have
// received from it in that round (judge_ring_evidence), re-decodes them and
// recomputes the bound from the announced norms it holds itself. If the
// messages break the bound, the accused is refused; if not, the accuser is
// (it made an accusation it could not back).
//
// In the shared-secret mode there are no per-node keys: messages are not
// signed, an accusation carries no evidence, and the coordinator believes
// the successor's word, as before (any holder of the secret can pose as any
// node there, so nothing could be proven anyway).
//
// Cost: one BLAKE2b pass and one signature per first-hop message
// (docs/PERFORMANCE.md, "Signed first hops"). Receivers verify nothing in
// an honest round: only an accuser checks the messages it hands over.
//
// Thread-free functions; any thread.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dist/contribution_check.h"
#include "dist/identity.h"

namespace intellect {

// Bytes a signature adds at the end of a signed ring message.
constexpr size_t kRingSignatureBytes = kSignatureBytes;
// What an accusation may carry (control::RingFailed::evidence).
constexpr size_t kMaxEvidenceMessages = 64;
constexpr size_t kMaxEvidenceBytes = size_t{16} << 20;

// Fills the last kRingSignatureBytes of `msg` with the signature of the rest:
// of BLAKE2b-256("intellect ring message v2" | the header | BLAKE2b-256 of
// the payload), the header being a ring message's kRingHeaderBytes (a leaf
// message's whole body, with an empty payload). Hashing the payload apart
// lets a sender whose payload is a committed leaf pass its digest
// (`payload_digest`, commitment.h), computed before the ring: it then signs
// without a pass over the bytes. Null: hashed here.
void sign_ring_message(std::span<uint8_t> msg, const NodeKey& key,
                       const std::array<uint8_t, 32>* payload_digest = nullptr);
// True when the last kRingSignatureBytes of `msg` are `pk`'s signature of the rest.
bool ring_message_signed_by(std::span<const uint8_t> msg, const PublicKey& pk);

// What the coordinator knows of the round an accusation is about.
struct EvidenceContext {
  uint64_t round = 0;
  int accuser_rank = 0, world = 0;  // the accuser's place in the ring as the coordinator formed it
  std::vector<double> norms;        // announced, by rank (as RingAnnounce carried them)
  double slack = 1.02;              // RingOptions::norm_slack
  // Announced commitments, by rank (commitment.h): an accusation whose
  // first message is a leaf message is judged against them.
  std::vector<std::array<uint8_t, 32>> commitments;
  // The accused's rank (-1: the accuser's ring predecessor). Sparse
  // accusations (sparse_evidence.h): the author of the chunks; the direct
  // pattern's: the sender of the contribution or the leaves; either may be
  // any member but the accuser. And the sparse check's slack.
  int accused_rank = -1;
  double sparse_slack = kSparseNormSlack;
  // Every member's key, by rank (sparse: the author's key of a chunk the
  // accused forwarded altered; empty or all-zero: unknown).
  std::vector<PublicKey> keys;
};

struct EvidenceVerdict {
  bool holds = false;  // the messages are the accused's, and they break the announced bound
  std::string why;     // what was checked, or what did not hold
  // It holds as a sparse chunk the accused sent altered (its author's
  // signature broken under the accused's signature as sender), not as a
  // broken announcement.
  bool altered = false;
};

// Judges the messages an accuser handed over against the accused's key.
// Two kinds: ring messages that break the norm bound, or (a leaf message
// first) a commitment mismatch: the accused's signed leaf message that does
// not hash to its announced commitment, or that does plus its signed step-0
// message whose bytes do not match their leaf.
// Sparse chunks (the first message has the sparse all-gather's magic) are
// judged by judge_sparse_evidence (sparse_evidence.h). The direct pattern's
// (direct_allreduce.h): its contribution messages (phase 2), each a chunk
// of the accuser's segment signed by the accused (ctx.accused_rank, any
// member), whose squares exceed its announced norm's bound, or its average
// messages (phase 3), chunks of the accused's own segment, whose squares
// exceed the mean of the announced norms' bound; and a leaf message is
// judged against the accused's commitment (ctx.accused_rank when set,
// otherwise the accuser's ring predecessor).
// Never throws on malformed input: a malformed message is a verdict.
EvidenceVerdict judge_ring_evidence(const std::vector<std::vector<uint8_t>>& messages, const PublicKey& accused,
                                    const EvidenceContext& ctx);
// A message of the direct pattern (a well-formed ring header of phase
// kDirectPhaseReduce or kDirectPhaseGather).
bool is_direct_message(std::span<const uint8_t> msg);

}  // namespace intellect
