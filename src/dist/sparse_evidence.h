// Signed sparse contributions and the evidence of a sparse accusation: the
// sparse all-gather's twin of ring_evidence.h.
//
// A sparse round (sparse_allgather.h) carries every node's contribution
// round the ring unchanged, chunk by chunk, and each rank checks each
// source's decoded chunks against that source's own announced norm
// (SourceNormCheck, contribution_check.h). In a node-key run the author
// signs each chunk of its contribution (Ed25519 over BLAKE2b-256 of a label,
// the header with its step field zeroed, and the payload's BLAKE2b-256) and
// every forwarder passes the signature on untouched: the step is the one
// field a forwarder changes, so it is the one field the signature leaves
// out. Any rank that finds a source above its bound can then show the
// coordinator the author's own signed chunks, whichever ranks forwarded them:
// the header binds each to the round, the ring size, the author's rank, the
// lane and the chunk, and an honest author signs one message per (round,
// lane, chunk), parts of one vector whose squares add up to at most its
// (1 + 1/14)-inflated announced norm.
//
// Every receiver verifies the author's signature of every chunk on
// receipt, before the chunk is used or forwarded (on the lane's receiving
// thread, the one that already checks it), and signs, as its sender, what
// it forwards: a second signature, over the whole header (step included),
// the payload's digest (already computed for the check) and the author's
// signature. A chunk whose author signature does not hold was altered by
// its sender (an honest sender checked it before signing it on): with the
// sender's own signature on it, it proves that to the coordinator
// (judge_sparse_evidence's second kind), which refuses the sender; with a
// bad sender signature too it proves nothing, the round fails and the
// link is avoided. A chunk replayed from another round, lane, chunk or
// author does not verify either: the author's signature binds all four.
//
// Cost: the author, one BLAKE2b pass over its own contribution (2 bytes a
// kept value) and two signatures per chunk, before its chunks are queued;
// every receiver, per arrived chunk, a BLAKE2b pass, one verification and
// (when it forwards it) one signature (bench_sparse_signing).
//
// Thread-free functions; any thread.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "dist/identity.h"
#include "dist/ring_evidence.h"

namespace intellect {

using SparseDigest = std::array<uint8_t, 32>;
// BLAKE2b-256 of a message's payload: the bytes between the header and the
// two signatures (`msg` at least a header and kSparseSignedBytes long).
SparseDigest sparse_payload_digest(std::span<const uint8_t> msg);
// The author: fills both signatures of `msg` (header, payload, room for
// kSparseSignedBytes) with `key`'s: as author (of everything before them,
// step field aside) and as the sender of this step.
void sign_sparse_message(std::span<uint8_t> msg, const NodeKey& key);
// A forwarder, after checking the author's signature: signs `msg` as its
// sender (its last kSparseSignatureBytes), over the whole header as it is
// now, `payload` (sparse_payload_digest of it) and the author's signature.
void sign_sparse_forward(std::span<uint8_t> msg, const NodeKey& key, const SparseDigest& payload);
// True when the author signature of `msg` is `pk`'s (whatever its step
// field holds). Never throws. The second form takes the payload's digest.
bool sparse_message_signed_by(std::span<const uint8_t> msg, const PublicKey& pk);
bool sparse_message_signed_by(std::span<const uint8_t> msg, const PublicKey& pk, const SparseDigest& payload);
// True when the sender signature of `msg` is `pk`'s. Never throws.
bool sparse_message_sent_by(std::span<const uint8_t> msg, const PublicKey& pk, const SparseDigest& payload);

// Judges an accusation whose messages are sparse chunks. Two kinds:
//  - an excess: every chunk signed by the accused's key as author, of the
//    context's round and ring size, authored by rank ctx.accused_rank, no
//    (lane, chunk) twice, each payload valid; then their decoded sum of
//    squares against the accused's own announced norm times
//    ctx.sparse_slack;
//  - an altered chunk: one message whose author signature does not hold
//    (the author's key: ctx.keys[source], or `accused` for its own chunk)
//    but whose sender signature is the accused's, sent by the accused at
//    its step (rank source + step) to the accuser (the next rank), of the
//    context's round and ring size.
// Never throws on malformed input.
EvidenceVerdict judge_sparse_evidence(const std::vector<std::vector<uint8_t>>& messages, const PublicKey& accused,
                                      const EvidenceContext& ctx);

}  // namespace intellect
