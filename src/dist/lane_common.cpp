#include "dist/lane_common.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dist/message_buffers.h"
#include "dist/ring_evidence.h"
#include "util/error.h"

namespace intellect {

std::string keep_provable(const RingOptions& opt, int accused_rank, const PublicKey* accused_key,
                          std::vector<std::vector<uint8_t>>& evidence) {
  if (!opt.signer) {
    evidence.clear();
    return "";
  }
  if (evidence.empty()) return " (no evidence kept: the excess is spread over more messages than are kept)";
  if (!accused_key) {
    evidence.clear();
    return " (the accused's key is not known here: no evidence)";
  }
  EvidenceContext ec;
  ec.round = opt.round;
  ec.accuser_rank = opt.rank;
  ec.accused_rank = accused_rank;
  ec.world = opt.world;
  ec.norms = opt.announced_norms;
  ec.slack = opt.norm_slack;
  if (opt.audit) ec.commitments = opt.audit->roots;
  const EvidenceVerdict v = judge_ring_evidence(evidence, *accused_key, ec);
  if (!v.holds) {
    evidence.clear();
    return str(" (its messages do not prove it on their own: ", v.why, ")");
  }
  return str(" (evidence: ", evidence.size(), " of its signed messages)");
}

std::string round_argument_error(const RingOptions& opt, std::span<const float> input, std::span<float> output,
                                 bool carried) {
  if (opt.world < 1 || opt.rank < 0 || opt.rank >= opt.world) return "rank must be in [0, world) and world ≥ 1";
  if (opt.chunk_elems == 0 || opt.chunk_elems > UINT32_MAX) return "chunk_elems must be in [1, 2^32)";
  if (opt.compression == Compression::Sparse)
    return "sparse compression is not a dense average: use sparse_allgather_average";
  if (opt.compression != Compression::None && (opt.int8_block == 0 || opt.int8_block > UINT32_MAX))
    return "int8_block (the codec's block) must be in [1, 2^32)";
  if (opt.codec_threads < 1 || opt.codec_threads > 256) return "codec_threads must be in [1, 256]";
  if (input.size() != output.size()) return str("input has ", input.size(), " values but output ", output.size());
  if (carried && opt.carried_into) return "the carried chunks go to a planned round or to `carried`, not both";
  const float *in_lo = input.data(), *in_hi = in_lo + input.size();
  const bool in_place = input.data() == output.data();
  if (!input.empty() && !in_place && output.data() < in_hi && in_lo < output.data() + output.size())
    return "output overlaps part of the input; pass the same buffer (in place) or a separate one";
  const size_t S = input.size();
  if ((S + opt.chunk_elems - 1) / opt.chunk_elems > UINT32_MAX) return "too many chunks; raise chunk_elems";
  if (opt.audit) {
    const LeafCommitment* own = opt.audit->own;
    if (!own || opt.audit->roots.size() != static_cast<size_t>(opt.world) || own->layout.chunk != opt.chunk_elems ||
        own->layout.compression != opt.compression || opt.lane >= own->leaves.size() ||
        own->leaves[opt.lane].size() != (S + opt.chunk_elems - 1) / opt.chunk_elems)
      return "this rank's commitment does not fit the round's layout (its chunk, codec or lanes; internal error)";
  }
  return "";
}

std::string average_alone(std::span<const float> input, std::span<float> output) {
  for (size_t i = 0; i < input.size(); ++i)
    if (!std::isfinite(input[i]))
      return str("input value ", i, " is ", input[i],
                 "; a pseudo-gradient with NaN/inf must not be averaged (the inner steps diverged)");
  if (input.data() != output.data()) std::copy(input.begin(), input.end(), output.begin());
  return "";
}

std::vector<uint8_t> new_ring_message(const RingHeader& h) {
  std::vector<uint8_t> msg = MessageBuffers::process().take(
      kRingHeaderBytes + codec_encoded_bytes(h.compression, h.count, h.int8_block) +
      (h.is_signed ? kRingSignatureBytes : 0));
  const std::vector<uint8_t> head = encode_ring_header(h);
  std::memcpy(msg.data(), head.data(), kRingHeaderBytes);
  return msg;
}

std::vector<uint8_t> own_leaf_message(const RingOptions& opt, size_t lane_elems) {
  const LeafCommitment& own = *opt.audit->own;
  LeafMessage m;
  m.round = opt.round;
  m.total_elems = own.total_elems;
  m.lane_elems = lane_elems;
  m.lane = opt.lane;
  m.layout = own.layout;
  m.lane_roots = own.lane_roots;
  m.leaves = own.leaves[opt.lane];
  return encode_leaf_message(m, opt.signer);
}

void refuse_non_finite_input(std::span<const float> input, size_t off, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(input[off + i]))
      fail("input value ", off + i, " is ", input[off + i],
           "; a pseudo-gradient with NaN/inf must not be averaged (the inner steps diverged; retrying will not help)");
}

CarriedChunks::CarriedChunks(const RingOptions& opt, const BlockCodec& codec, size_t lane_elems,
                             std::vector<RingCarried>* carried, const char* lane_kind)
    : opt_(opt),
      codec_(codec),
      carried_(carried && codec.lossy() ? carried : nullptr),
      into_(codec.lossy() ? opt.carried_into : nullptr) {
  if (!carried_ && !into_) return;
  counts_ = ring_chunk_counts(opt, lane_elems);
  offsets_.resize(counts_.size());
  for (size_t i = 1; i < counts_.size(); ++i) offsets_[i] = offsets_[i - 1] + counts_[i - 1];
  if (carried_) carried_->resize(counts_.size());
  if (into_) {  // the plan was cut by ring_chunk_counts: it must be this lane's cut
    bool fits = opt.carried_first_piece + counts_.size() <= into_->pieces();
    for (size_t i = 0; fits && i < counts_.size(); ++i)
      fits = into_->payload_bytes(opt.carried_first_piece + i) == codec.encoded_bytes(counts_[i]);
    if (!fits) fail(lane_kind, " lane ", opt.lane, ": the planned round does not match the lane's cut (internal error)");
  }
}

void CarriedChunks::keep(size_t index, const uint8_t* payload) {
  if (into_) {
    const size_t piece = opt_.carried_first_piece + index;
    std::memcpy(into_->payload(piece), payload, into_->payload_bytes(piece));
    return;
  }
  if (!carried_) return;
  RingCarried& k = (*carried_)[index];
  k.compression = opt_.compression;
  k.offset = offsets_[index];
  k.count = counts_[index];
  k.block = codec_.block();
  k.encoded.assign(payload, payload + codec_.encoded_bytes(k.count));
}

void LaneFailure::record(std::exception_ptr e) {
  std::lock_guard<std::mutex> lock(mu_);  // the offender goes with the error that won
  std::string already;
  const bool first = !first_.get(already);
  try {
    std::rethrow_exception(e);
  } catch (const ContributionExceedsAnnouncement& c) {
    if (first) offender_ = c.offender_rank, evidence_ = c.evidence;
    first_.record(c.what());
  } catch (const std::exception& x) {
    first_.record(x.what());
  }
}

void throw_lane_failure(const std::string& ctx, LaneFailure& failure, const RingOptions& opt, int accused_rank,
                        const PublicKey* accused_key, bool check_evidence) {
  std::string msg;
  failure.failed(msg);
  if (failure.offender() >= 0) {
    std::vector<std::vector<uint8_t>> evidence = failure.take_evidence();
    const std::string note = check_evidence ? keep_provable(opt, accused_rank, accused_key, evidence) : "";
    throw ContributionExceedsAnnouncement(str(ctx, " failed: ", msg, note, ". The round is abandoned"),
                                          failure.offender(), std::move(evidence));
  }
  fail(ctx, " failed: ", msg, ". The round is abandoned and the input is untouched; retry with a new ring");
}

}  // namespace intellect
