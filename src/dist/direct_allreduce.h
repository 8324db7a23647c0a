// The direct pattern of a dense outer round (diloco.all_reduce "direct"):
// the same average as the ring (ring_allreduce.h), the same bytes on each
// node's uplink, but every contribution travels one hop, encoded once.
//
// The buffer is cut into N segments as the ring cuts it (on whole
// commitment leaves when audited), and rank s owns segment s.
// Reduce: each rank sends chunk c of segment s of its own contribution
// straight to rank s, for every s but its own. These are the very bytes it
// committed to before the round (LeafCommitment::encoded): no encode in the
// round, and every chunk of every contribution is audited against its
// sender's leaves, where the ring audits only the first hop, 1/N of it.
// The owner adds the N − 1 others' contributions to a chunk, decoded in rank
// order, to its own as it is (unquantized, as a ring's owner adds its own:
// no encode or decode of it), divides by N, quantizes the average once and keeps
// the decoded values. Gather: the owner sends that encoding to every other
// rank, which decodes it; so every rank ends with the same bits, as in the
// ring. Each rank sends (N − 1)/N of the buffer in each phase, as the ring's
// reduce-scatter and all-gather do.
//
// What it saves against the ring: a ring re-quantizes a partial sum at
// every hop (a rank encodes S values in the round on top of the S its
// commitment encoded); here a rank encodes only its segment's average,
// S/N (issue 15: the 4-node round was CPU-bound, the encoder a quarter of
// it). And a contribution is quantized once, by its sender, so its
// quantization error is the sender's alone (issue 18: 2-bit partial sums
// re-quantized at each hop lost more than the codec's own error). What it
// costs: N − 1 connections a lane in each direction instead of one, all
// links in use at once, so the bandwidth-aware ring order has nothing to
// choose (docs/ARCHITECTURE.md).
//
// Messages: the ring's header (ring_allreduce.h) with phase
// kDirectPhaseReduce (segment = the receiver's, signed in node-key runs:
// each is its sender's own contribution) and kDirectPhaseGather (segment =
// the sender's, unsigned), step 0. On the link from rank r to rank s, in
// this order: r's leaf message (audited lanes), the chunks of segment s of
// r's contribution, then the chunks of r's average. Every header is checked
// field by field against that schedule; payloads are validated, audited and
// norm-checked before use: contribution k's decoded squares summed over a
// segment stay within k's announced norm, an average's within the mean of
// the norms (times norm_slack).
//
// Threads, per call: the calling thread submits its own chunks and then
// waits; one receiving thread and one sending thread per peer; the codec
// pool (RingOptions::codec_threads) checks, decodes, averages and encodes.
// Each chunk of the output is written by one job at a time: a chunk of our
// own segment by the job that completes its set of contributions, a chunk
// of another's by the job that decodes its average.
//
// Failure: as the ring's: any error aborts every peer link (so the peers
// fail fast) and throws; ContributionExceedsAnnouncement names the
// offender (any member: it sent to us directly). In node-key runs it
// carries evidence the coordinator judges (ring_evidence.h): the offender's
// signed contributions whose squares break its announced norm's bound, or
// its signed leaf message that does not hash to its commitment; checked
// here with the offender's key (RingOptions::member_keys) before it goes.
// A contribution whose bytes differ from its leaf is named without
// evidence, as the ring's first hop is: it is signed with the committed
// leaf's digest (no pass over the bytes), so it proves nothing.
#pragma once
#include <span>
#include <vector>

#include "dist/ring_allreduce.h"

namespace intellect {

// output = the average over the N ranks of every rank's input, the same
// bits on every rank. peers[j] is the link with rank j (send_to_next sends
// to it, recv_from_prev receives from it); peers[opt.rank] is null.
// `committed`: this rank's commitment with its encodings kept
// (commit_leaves' keep_encoded; opt.audit->own when audited); null: each
// own chunk is encoded in the round. `carried`: as the ring's. input and
// output as the ring's (separate, or the same span).
RingStats direct_allreduce_average(std::span<RingLink* const> peers, const RingOptions& opt,
                                   std::span<const float> input, std::span<float> output,
                                   const LeafCommitment* committed = nullptr,
                                   std::vector<RingCarried>* carried = nullptr);

}  // namespace intellect
