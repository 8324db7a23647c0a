#include "dist/ring_evidence.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <set>

#include "dist/codec.h"
#include "dist/commitment.h"
#include "dist/contribution_check.h"
#include "dist/ring_allreduce.h"
#include "dist/sparse_allgather.h"
#include "dist/sparse_evidence.h"
#include "util/error.h"

namespace intellect {

namespace {

// Where a signed body's header ends and its payload begins.
size_t header_bytes(std::span<const uint8_t> body) {
  return is_leaf_message(body) ? body.size() : std::min(body.size(), kRingHeaderBytes);
}

// What is signed: a digest of the header and of the payload's digest, under
// a label of its own so that no other signature a node makes (the
// handshake's) can pass for one.
std::array<uint8_t, 32> message_digest(std::span<const uint8_t> body, const std::array<uint8_t, 32>* payload_digest) {
  static const char label[] = "intellect ring message v2";
  const size_t h = header_bytes(body);
  const std::array<uint8_t, 32> p = payload_digest ? *payload_digest : leaf_digest(body.subspan(h));
  std::array<uint8_t, 32> d{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, d.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), sizeof label);
  crypto_generichash_update(&st, body.data(), h);
  crypto_generichash_update(&st, p.data(), p.size());
  crypto_generichash_final(&st, d.data(), d.size());
  return d;
}

size_t wrap(int64_t s, int64_t n) { return static_cast<size_t>(((s % n) + n) % n); }

}  // namespace

void sign_ring_message(std::span<uint8_t> msg, const NodeKey& key, const std::array<uint8_t, 32>* payload_digest) {
  INTELLECT_CHECK(msg.size() >= kRingSignatureBytes, "sign_ring_message: a message shorter than its signature");
  const size_t body = msg.size() - kRingSignatureBytes;
  const std::array<uint8_t, 32> d = message_digest(msg.first(body), payload_digest);
  const Signature sig = key.sign(d);
  std::copy(sig.begin(), sig.end(), msg.begin() + static_cast<std::ptrdiff_t>(body));
}

bool ring_message_signed_by(std::span<const uint8_t> msg, const PublicKey& pk) {
  if (msg.size() < kRingSignatureBytes) return false;
  const size_t body = msg.size() - kRingSignatureBytes;
  Signature sig;
  std::copy(msg.begin() + static_cast<std::ptrdiff_t>(body), msg.end(), sig.begin());
  return verify_signature(pk, message_digest(msg.first(body), nullptr), sig);
}

namespace {

EvidenceVerdict judge_commitment_evidence(const std::vector<std::vector<uint8_t>>& messages, const PublicKey& accused,
                                          const EvidenceContext& ctx) {
  auto no = [](auto&&... why) { return EvidenceVerdict{false, str(why...)}; };
  auto yes = [](auto&&... why) { return EvidenceVerdict{true, str(why...)}; };
  if (ctx.world < 2 || ctx.accuser_rank < 0 || ctx.accuser_rank >= ctx.world ||
      ctx.commitments.size() != static_cast<size_t>(ctx.world))
    return no("no commitments are known for that ring");
  if (messages.size() > 2) return no(messages.size(), " messages where a leaf message and one ring message show it");
  // The sender of the leaves: a ring's predecessor, or in the direct
  // pattern any member (every member sends its leaves to every other).
  const size_t prev = ctx.accused_rank >= 0 && ctx.accused_rank < ctx.world ? static_cast<size_t>(ctx.accused_rank)
                                                                            : wrap(int64_t(ctx.accuser_rank) - 1, ctx.world);
  LeafMessage leaf;
  try {
    leaf = parse_leaf_message(messages[0], "evidence leaf message");
  } catch (const Error& e) {
    return no(e.what());
  }
  if (!leaf.is_signed) return no("the leaf message is not signed");
  if (!ring_message_signed_by(messages[0], accused)) return no("the leaf message's signature is not the accused's");
  if (leaf.round != ctx.round) return no("the leaf message is of round ", leaf.round, ", not ", ctx.round);
  Digest root{};
  std::string why;
  if (!leaf_message_root(leaf, &root, &why)) return yes("its signed leaf message contradicts itself: ", why);
  if (root != ctx.commitments[prev]) return yes("its signed leaf message does not hash to the commitment it announced");
  if (messages.size() < 2) return no("its leaf message matches its commitment, and no message shows otherwise");
  const std::vector<uint8_t>& m = messages[1];
  RingHeader h;
  try {
    h = parse_ring_header(m, "evidence message");
  } catch (const Error& e) {
    return no(e.what());
  }
  if (!h.is_signed) return no("the ring message is not signed");
  if (!ring_message_signed_by(m, accused)) return no("the ring message's signature is not the accused's");
  // A ring's first hop carries the sender's own segment; a direct
  // contribution, the receiver's (the accuser's) segment.
  const bool direct = h.phase == kDirectPhaseReduce;
  const size_t seg = direct ? static_cast<size_t>(ctx.accuser_rank) : prev;
  if (h.round != ctx.round || h.world != static_cast<uint32_t>(ctx.world) ||
      (h.phase != kRingPhaseReduceScatter && !direct) || h.step != 0 || h.segment != seg || h.lane != leaf.lane ||
      h.total_elems != leaf.lane_elems || h.compression != leaf.layout.compression ||
      h.int8_block != leaf.layout.block)
    return no("the ring message is not the accused's step-0 message (or direct contribution) of that round and lane");
  const size_t chunk = leaf.layout.chunk, S = leaf.lane_elems;
  const size_t begin = aligned_segment_begin(S, ctx.world, chunk, seg);
  const size_t end = aligned_segment_begin(S, ctx.world, chunk, seg + 1);
  const size_t off = begin + size_t{h.chunk} * chunk;
  if (off >= end || h.count != std::min(chunk, end - off))
    return no("chunk ", h.chunk, " of ", h.count, " values is not in the accused's segment");
  const size_t index = off / chunk;
  if (index >= leaf.leaves.size()) return no("leaf ", index, " is past the leaf message's ", leaf.leaves.size());
  const size_t bytes = codec_encoded_bytes(h.compression, h.count, h.int8_block);
  if (leaf_digest({m.data() + kRingHeaderBytes, bytes}) == leaf.leaves[index])
    return no("the ring message's bytes match leaf ", index, " of the accused's commitment");
  return yes("its signed step-0 message (chunk ", h.chunk, ") does not match leaf ", index,
             " of the commitment it announced and signed");
}

// What both norm judges check of each message, in order, and the squares
// they sum: within the byte cap, a ring header signed by the accused, of
// this round and this ring size (open); not a repeat of one already counted
// (its squares would count twice), a payload that decodes (add_squares).
class SignedEvidence {
 public:
  SignedEvidence(const PublicKey& accused, const EvidenceContext& ctx) : accused_(accused), ctx_(ctx) {}
  // Message i; "" when it passes (*h filled).
  std::string open(size_t i, const std::vector<uint8_t>& m, RingHeader* h) {
    what_ = str("evidence message ", i);
    bytes_ += m.size();
    if (bytes_ > kMaxEvidenceBytes) return str("more than ", kMaxEvidenceBytes, " bytes of messages");
    try {
      *h = parse_ring_header(m, what_);
    } catch (const Error& e) {
      return e.what();
    }
    if (!h->is_signed) return str(what_, " is not signed");
    if (!ring_message_signed_by(m, accused_)) return str(what_, ": the signature is not the accused's");
    if (h->round != ctx_.round) return str(what_, " is of round ", h->round, ", not ", ctx_.round);
    if (h->world != static_cast<uint32_t>(ctx_.world))
      return str(what_, " is of a ring of ", h->world, ", not ", ctx_.world);
    return "";
  }
  std::string add_squares(const std::vector<uint8_t>& m, const RingHeader& h) {
    std::array<uint8_t, 32> d{};
    crypto_generichash(d.data(), d.size(), m.data(), m.size(), nullptr, 0);
    if (!seen_.insert(d).second) return str(what_, " repeats an earlier one");
    try {
      const std::unique_ptr<BlockCodec> codec = make_block_codec(h.compression, h.int8_block, 1);
      const uint8_t* payload = m.data() + kRingHeaderBytes;
      codec->validate(payload, h.count, what_.c_str());
      sum_squares_ += codec->sum_squares(payload, h.count);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  const std::string& what() const { return what_; }
  double sum_squares() const { return sum_squares_; }

 private:
  const PublicKey& accused_;
  const EvidenceContext& ctx_;
  std::string what_;
  size_t bytes_ = 0;
  double sum_squares_ = 0.0;
  std::set<std::array<uint8_t, 32>> seen_;
};

// The direct pattern's messages (direct_allreduce.h), all of one phase:
// contributions the accused sent the accuser, each a chunk of the accuser's
// segment of the accused's own contribution, whose squares together exceed
// the bound the accused's announced norm sets; or averages of the accused's
// own segment, whose squares exceed the bound the mean of all announced
// norms sets (DirectNormCheck::average_bound).
EvidenceVerdict judge_direct_evidence(const std::vector<std::vector<uint8_t>>& messages, const PublicKey& accused,
                                      const EvidenceContext& ctx) {
  auto no = [](auto&&... why) { return EvidenceVerdict{false, str(why...)}; };
  if (messages.size() > kMaxEvidenceMessages) return no(messages.size(), " messages, more than ", kMaxEvidenceMessages);
  if (ctx.world < 2 || ctx.accuser_rank < 0 || ctx.accuser_rank >= ctx.world || ctx.accused_rank < 0 ||
      ctx.accused_rank >= ctx.world || ctx.accused_rank == ctx.accuser_rank ||
      ctx.norms.size() != static_cast<size_t>(ctx.world))
    return no("the accuser and the accused are not two members of the round");
  SignedEvidence ev(accused, ctx);
  uint8_t phase = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    RingHeader h;
    if (std::string why = ev.open(i, messages[i], &h); !why.empty()) return no(why);
    if (h.phase != kDirectPhaseReduce && h.phase != kDirectPhaseGather)
      return no(ev.what(), " is not a message of the direct pattern");
    if (i == 0) phase = h.phase;
    if (h.phase != phase) return no(ev.what(), " is of another phase than message 0");
    // A contribution to the accuser's segment, or an average of the accused's own.
    const int want = phase == kDirectPhaseReduce ? ctx.accuser_rank : ctx.accused_rank;
    if (h.segment != static_cast<uint32_t>(want))
      return no(ev.what(), ": segment ", h.segment, " is not the ", phase == kDirectPhaseReduce ? "accuser" : "accused",
                "'s (", want, ")");
    if (std::string why = ev.add_squares(messages[i], h); !why.empty()) return no(why);
  }
  double b = 0.0;
  if (phase == kDirectPhaseReduce) {
    const double norm = ctx.norms[static_cast<size_t>(ctx.accused_rank)];
    if (!(norm >= 0.0) || !std::isfinite(norm)) return no("the accused announced no norm for that step");
    b = ctx.slack * norm;
  } else {
    const DirectNormCheck check(ctx.norms, ctx.world, ctx.slack);
    if (!check.enabled()) return no("not every member of the round announced a norm, so no average was checked");
    b = check.average_bound();
  }
  const char* kind = phase == kDirectPhaseReduce ? "contribution" : "average";
  const char* bound_of = phase == kDirectPhaseReduce ? "its announced norm" : "the mean of the announced norms";
  const double sum_squares = ev.sum_squares();
  if (sum_squares <= b * b + kNormFloor)
    return no("the ", messages.size(), " ", kind, " messages' norm ", std::sqrt(sum_squares), " is within the ", b,
              " ", bound_of, " allows");
  return EvidenceVerdict{true, str(messages.size(), " ", kind, " messages signed by the accused have a norm of ",
                                   std::sqrt(sum_squares), ", above the ", b, " ", bound_of, " allows")};
}

}  // namespace

bool is_direct_message(std::span<const uint8_t> msg) {
  try {
    const uint8_t phase = parse_ring_header(msg, "message").phase;
    return phase == kDirectPhaseReduce || phase == kDirectPhaseGather;
  } catch (const Error&) {
    return false;
  }
}

EvidenceVerdict judge_ring_evidence(const std::vector<std::vector<uint8_t>>& messages, const PublicKey& accused,
                                    const EvidenceContext& ctx) {
  auto no = [](auto&&... why) { return EvidenceVerdict{false, str(why...)}; };
  if (messages.empty()) return no("no messages");
  if (is_leaf_message(messages[0])) return judge_commitment_evidence(messages, accused, ctx);
  if (is_sparse_message(messages[0])) return judge_sparse_evidence(messages, accused, ctx);
  if (is_direct_message(messages[0])) return judge_direct_evidence(messages, accused, ctx);
  if (messages.size() > kMaxEvidenceMessages) return no(messages.size(), " messages, more than ", kMaxEvidenceMessages);
  if (ctx.world < 2 || ctx.accuser_rank < 0 || ctx.accuser_rank >= ctx.world ||
      ctx.norms.size() != static_cast<size_t>(ctx.world))
    return no("the accuser is not in a ring of two or more");
  const ContributionCheck check(ctx.norms, ctx.accuser_rank, ctx.world, ctx.slack);
  if (!check.enabled()) return no("not every member of the ring announced a norm, so nothing was checked");
  RingHeader first;
  SignedEvidence ev(accused, ctx);
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& what = ev.what();
    RingHeader h;
    if (std::string why = ev.open(i, messages[i], &h); !why.empty()) return no(why);
    if (h.phase > kRingPhaseAllGather) return no(what, " is a message of the direct pattern, not of a ring");
    if (i == 0) first = h;
    if (h.phase != first.phase || h.step != first.step || h.segment != first.segment)
      return no(what, " is of another phase, step or segment than message 0");
    if (h.step + 1 >= static_cast<uint32_t>(ctx.world)) return no(what, ": a ring of ", ctx.world, " has no step ", h.step);
    // What the accuser receives at that step (ring_allreduce.cpp's schedule).
    const bool all_gather = h.phase == 1;
    const size_t want_segment = wrap(int64_t(ctx.accuser_rank) - int64_t(h.step) - (all_gather ? 0 : 1), ctx.world);
    if (h.segment != want_segment)
      return no(what, ": segment ", h.segment, " is not what the accuser receives at step ", h.step, " (", want_segment, ")");
    // (Two lanes' messages of one header are different values: their
    // squares add up within the same bound.)
    if (std::string why = ev.add_squares(messages[i], h); !why.empty()) return no(why);
  }
  const double sum_squares = ev.sum_squares();
  const double b = check.bound(first.phase == 1, first.step);
  const double norm = std::sqrt(sum_squares);
  if (sum_squares <= b * b + kNormFloor)
    return no("the ", messages.size(), " messages' norm ", norm, " is within the ", b, " the announced norms allow");
  return EvidenceVerdict{true, str(messages.size(), " messages signed by the accused, of ",
                                   first.phase == 1 ? "all-gather" : "reduce-scatter", " step ", first.step,
                                   ", have a norm of ", norm, ", above the ", b, " the announced norms allow")};
}

}  // namespace intellect
