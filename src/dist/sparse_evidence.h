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
// Receivers verify nothing in an honest round (as with dense first hops):
// the accuser checks the chunks it hands over with the author's key (from
// the ring announcement) and the coordinator's own judgement first. A chunk
// whose signature does not verify (a forwarder altered it, or the author
// signed other bytes) cannot be pinned on anyone: the round fails, nobody is
// refused and the link to the predecessor is avoided. What this does not
// catch: a forwarder that alters another's chunk within that author's bound
// (no receiver verifies signatures in an honest round).
//
// Cost for the author: one BLAKE2b pass over its own contribution (2 bytes
// a kept value) and one signature per chunk, before its chunks are queued.
//
// Thread-free functions; any thread.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "dist/identity.h"
#include "dist/ring_evidence.h"

namespace intellect {

// Fills the last kSparseSignatureBytes of `msg` (header, payload, room for
// the signature) with `key`'s signature of the rest, step field aside.
void sign_sparse_message(std::span<uint8_t> msg, const NodeKey& key);
// True when the last kSparseSignatureBytes of `msg` are `pk`'s signature of
// the rest (whatever its step field holds). Never throws.
bool sparse_message_signed_by(std::span<const uint8_t> msg, const PublicKey& pk);

// Judges an accusation whose messages are sparse chunks: every one signed
// by the accused's key, of the context's round and ring size, authored by
// rank ctx.accused_rank (the accused), no (lane, chunk) twice, each payload
// valid; then their decoded sum of squares against the accused's own
// announced norm times ctx.sparse_slack. Never throws on malformed input.
EvidenceVerdict judge_sparse_evidence(const std::vector<std::vector<uint8_t>>& messages, const PublicKey& accused,
                                      const EvidenceContext& ctx);

}  // namespace intellect
