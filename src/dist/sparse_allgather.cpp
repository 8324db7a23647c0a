#include "dist/sparse_allgather.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include "dist/bytes.h"
#include "dist/contribution_check.h"
#include "dist/ring_queue.h"
#include "dist/sparse.h"
#include "dist/sparse_evidence.h"
#include "util/error.h"

namespace intellect {

namespace {

// What this rank's accusation of rank `accused` in this round is judged against.
EvidenceContext evidence_context(const SparseRingOptions& opt, size_t accused) {
  EvidenceContext ec;
  ec.round = opt.round;
  ec.accuser_rank = opt.rank;
  ec.accused_rank = static_cast<int>(accused);
  ec.world = opt.world;
  return ec;
}

constexpr uint32_t kMagic = 0x47415349;  // "ISAG" in memory order
// 2: the flags byte (signed chunks, sparse_evidence.h) and the lane.
// 3: a signed chunk carries its sender's signature after its author's.
constexpr uint8_t kVersion = 3;
constexpr uint8_t kFlagSigned = 1;

// output = the rank-order average of the N contributions in `all` (each
// `one` bytes), chunk by chunk: each the same sum a round_codec piece of
// that chunk decodes to; with `carried`, those pieces.
void average_chunks(const std::vector<uint8_t>& all, size_t N, size_t S, const SparseRingOptions& opt,
                    std::span<float> output, std::vector<RingCarried>* carried) {
  const size_t chunk = opt.chunk_blocks * opt.block, one = sparse_encoded_bytes(S, opt.block, opt.k);
  std::vector<uint8_t> piece;
  for (size_t c = 0; c * chunk < S; ++c) {
    const size_t len = std::min(chunk, S - c * chunk), bytes = sparse_encoded_bytes(len, opt.block, opt.k);
    const size_t at = sparse_encoded_bytes(c * chunk, opt.block, opt.k);  // chunks are block-aligned
    piece.resize(N * bytes);
    for (size_t s = 0; s < N; ++s) std::memcpy(piece.data() + s * bytes, all.data() + s * one + at, bytes);
    sparse_average(piece.data(), N, len, opt.block, opt.k, output.data() + c * chunk, opt.aggregation);
    if (!carried) continue;
    RingCarried k;
    k.compression = Compression::Sparse;
    k.offset = c * chunk;
    k.count = len;
    k.block = opt.block;
    k.k = opt.k;
    k.world = N;
    k.aggregation = opt.aggregation;
    k.encoded = piece;
    carried->push_back(std::move(k));
  }
}

// What is wrong with a call's arguments (empty: nothing).
std::string bad_arguments(const SparseRingOptions& opt, std::span<const float> input, std::span<const float> residual,
                          std::span<float> output) {
  if (opt.world < 1 || opt.rank < 0 || opt.rank >= opt.world) return "rank must be in [0, world) and world ≥ 1";
  if (opt.block < 1 || opt.block > kSparseMaxBlock || opt.k < 1 || opt.k > opt.block)
    return str("block must be in [1, ", kSparseMaxBlock, "] and k in [1, block]");
  if (opt.chunk_blocks == 0 || opt.chunk_blocks * opt.block > UINT32_MAX) return "chunk_blocks out of range";
  if (input.size() != output.size()) return str("input has ", input.size(), " values but output ", output.size());
  if (!residual.empty() && residual.size() != input.size())
    return str("the residual has ", residual.size(), " values, the input ", input.size());
  if (opt.signer && opt.signer->empty()) return "the signer holds no key";
  if (opt.signer && opt.member_keys.size() != static_cast<size_t>(opt.world))
    return str("a node-key round needs every member's key to check its chunks: ", opt.member_keys.size(),
               " keys for a ring of ", opt.world);
  for (size_t m = 0; opt.signer && m < opt.member_keys.size(); ++m)
    if (opt.member_keys[m] == PublicKey{})
      return str("the ring announcement carries no key for rank ", m, ", so its chunks cannot be checked");
  // In place is allowed: the input is read once, encoded before anything is
  // received, and the output written only after every contribution arrived.
  const float *in_lo = input.data(), *in_hi = in_lo + input.size();
  if (!input.empty() && input.data() != output.data() && output.data() < in_hi && in_lo < output.data() + output.size())
    return "output overlaps part of the input; pass the same buffer (in place) or a separate one";
  return "";
}

// One round's chunking and message headers, the same on every rank.
struct SparseLayout {
  const SparseRingOptions& opt;
  size_t S, N, chunk, n_chunks;
  bool keyed;
  size_t chunk_at(size_t c) const { return sparse_encoded_bytes(c * chunk, opt.block, opt.k); }  // block-aligned
  size_t chunk_len(size_t c) const { return std::min(chunk, S - c * chunk); }
  SparseHeader header(size_t step, size_t source, size_t c) const {
    SparseHeader h;
    h.round = opt.round;
    h.total_elems = S;
    h.world = static_cast<uint32_t>(N);
    h.step = static_cast<uint32_t>(step);
    h.source = static_cast<uint32_t>(source);
    h.chunk = static_cast<uint32_t>(c);
    h.count = static_cast<uint32_t>(chunk_len(c));
    h.block = static_cast<uint32_t>(opt.block);
    h.k = static_cast<uint32_t>(opt.k);
    h.lane = opt.lane;
    h.is_signed = keyed;
    return h;
  }
  // Header, the chunk's payload, and (when given) its author's signature,
  // with a sender's signature left zero (what the excess evidence needs).
  std::vector<uint8_t> message(size_t step, size_t source, size_t c, const uint8_t* payload,
                               const Signature* sig) const {
    std::vector<uint8_t> msg = encode_sparse_header(header(step, source, c));
    msg.insert(msg.end(), payload, payload + sparse_encoded_bytes(chunk_len(c), opt.block, opt.k));
    if (sig) {
      msg.insert(msg.end(), sig->begin(), sig->end());
      msg.resize(msg.size() + kSparseSignatureBytes);
    }
    return msg;
  }
  // This rank's chunks of its encoded contribution `own`, with room for
  // its signatures when keyed (signed one by one as they are queued, so the
  // first goes out while the rest are signed).
  std::vector<std::vector<uint8_t>> own_messages(size_t rank, const uint8_t* own) const {
    std::vector<std::vector<uint8_t>> out;
    for (size_t c = 0; c < n_chunks; ++c) {
      std::vector<uint8_t> msg = message(0, rank, c, own + chunk_at(c), nullptr);
      if (keyed) msg.resize(msg.size() + kSparseSignedBytes);
      out.push_back(std::move(msg));
    }
    return out;
  }
};

// What a node-key rank keeps of each arrived chunk, so that it can rebuild
// the author's signed messages when a source breaks its bound: the chunk's
// decoded sum of squares and the author's signature (the payload stays in
// the all-gather's buffer). 72 bytes a chunk.
struct ArrivedChunks {
  size_t n_chunks = 0;
  std::vector<double> sum_squares;  // [source * n_chunks + chunk]; < 0: not arrived
  std::vector<Signature> signatures;
  ArrivedChunks(size_t sources, size_t chunks)
      : n_chunks(chunks), sum_squares(sources * chunks, -1.0), signatures(sources * chunks) {}
  void record(size_t source, size_t c, double ss, std::span<const uint8_t> msg) {
    sum_squares[source * n_chunks + c] = ss;
    std::memcpy(signatures[source * n_chunks + c].data(), msg.data() + msg.size() - kSparseSignedBytes,
                kSparseSignatureBytes);
  }
};

// The fewest of `source`'s arrived chunks, largest first, whose squares
// alone break `bound` (at most kMaxEvidenceMessages, kMaxEvidenceBytes),
// rebuilt as their author signed them by `message_of(chunk, signature)`,
// and checked as the coordinator will check them (judge_sparse_evidence,
// with the author's key from the ring announcement). Empty, with `note`
// saying why, when they do not prove it; else `note` says what they are.
std::vector<std::vector<uint8_t>> provable_excess(
    const SparseRingOptions& opt, size_t source, double bound, const ArrivedChunks& arrived,
    const std::function<std::vector<uint8_t>(size_t, const Signature&)>& message_of, std::string* note) {
  const size_t n = arrived.n_chunks;
  std::vector<size_t> order;
  for (size_t c = 0; c < n; ++c)
    if (arrived.sum_squares[source * n + c] >= 0) order.push_back(c);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return arrived.sum_squares[source * n + a] > arrived.sum_squares[source * n + b];
  });
  std::vector<std::vector<uint8_t>> evidence;
  double sum = 0.0;
  size_t bytes = 0;
  for (size_t c : order) {
    std::vector<uint8_t> m = message_of(c, arrived.signatures[source * n + c]);
    bytes += m.size();
    if (bytes > kMaxEvidenceBytes || evidence.size() >= kMaxEvidenceMessages) break;
    sum += arrived.sum_squares[source * n + c];
    evidence.push_back(std::move(m));
    if (sum > bound * bound + kNormFloor) break;
  }
  if (!(sum > bound * bound + kNormFloor)) {
    *note = " (no evidence: the excess is spread over more chunks than an accusation carries)";
    return {};
  }
  if (source >= opt.member_keys.size() || opt.member_keys[source] == PublicKey{}) {
    *note = " (the author's key is not known here: no evidence)";
    return {};
  }
  EvidenceContext ec = evidence_context(opt, source);
  ec.norms = opt.announced_norms;
  ec.sparse_slack = opt.norm_slack;
  const EvidenceVerdict v = judge_sparse_evidence(evidence, opt.member_keys[source], ec);
  if (!v.holds) {
    *note = str(" (its chunks do not prove it on their own: ", v.why, ")");
    return {};
  }
  *note = str(" (evidence: ", evidence.size(), " of rank ", source, "'s chunks, signed by it)");
  return evidence;
}

// Node-key runs: a chunk from the previous rank `prev` (of `source`'s
// contribution) must carry its author's signature before it is kept or
// forwarded; returns its payload's digest, for the signature this rank adds
// as its sender when it forwards it. One that does not verify was altered
// by the previous rank, or signed badly by it when it is its own (an honest
// sender checks before it signs on): the round fails on it, and the chunk
// goes to the coordinator as evidence when the previous rank's signature as
// its sender holds (judge_sparse_evidence's altered kind), else nothing can
// be shown and only the link is avoided. A chunk replayed from another
// round, lane, chunk or author fails the same way (the header must match
// this one's, and the author's signature covers it).
SparseDigest check_author(const std::vector<uint8_t>& msg, size_t source, size_t prev, const SparseRingOptions& opt,
                          const std::string& what) {
  const SparseDigest payload = sparse_payload_digest(msg);
  const PublicKey &author = opt.member_keys[source], &sender = opt.member_keys[prev];
  if (sparse_message_signed_by(msg, author, payload)) return payload;
  const std::string why =
      str(what, ": the author signature does not hold for rank ", source, "'s key (", fingerprint(author), "): rank ",
          prev, " (", fingerprint(sender), ") ",
          source == prev ? "signed other bytes than it sent" : "altered another node's chunk (or passed on one it did not check)");
  if (sparse_message_sent_by(msg, sender, payload)) {
    EvidenceContext ec = evidence_context(opt, prev);
    ec.keys = opt.member_keys;
    const EvidenceVerdict v = judge_sparse_evidence({msg}, sender, ec);
    if (v.holds)
      throw ContributionExceedsAnnouncement(str(why, " (evidence: the chunk under its signature as sender)"),
                                            static_cast<int>(prev), {msg});
    throw ContributionExceedsAnnouncement(str(why, " (no evidence: ", v.why, ")"), static_cast<int>(prev));
  }
  throw ContributionExceedsAnnouncement(str(why, " (no evidence: its signature as sender does not hold either)"),
                                        static_cast<int>(prev));
}

// intellect_chaos --byzantine and tests only (attack_alter_forwarded): the
// sign of the chunk's first kept value flipped (its norm unchanged), then
// signed as its sender (1) or under a broken sender signature (2).
void alter_forwarded(std::vector<uint8_t>& msg, const SparseRingOptions& opt) {
  msg[kSparseHeaderBytes + 8] ^= 0x08;  // the first entry's sign bit (index << 4 | sign << 3 | m)
  if (!opt.signer) return;
  sign_sparse_forward(msg, *opt.signer, sparse_payload_digest(msg));
  if (opt.attack_alter_forwarded == 2) msg.back() ^= 1;
}

}  // namespace

std::vector<uint8_t> encode_sparse_header(const SparseHeader& h) {
  ByteWriter w(kSparseHeaderBytes);
  w.u32(kMagic);
  w.u8(kVersion);
  w.u8(h.is_signed ? kFlagSigned : 0);
  w.u16(0);
  w.u64(h.round);
  w.u64(h.total_elems);
  w.u32(h.world);
  w.u32(h.step);
  w.u32(h.source);
  w.u32(h.chunk);
  w.u32(h.count);
  w.u32(h.block);
  w.u32(h.k);
  w.u32(h.lane);
  INTELLECT_CHECK(w.size() == kSparseHeaderBytes);
  return w.take();
}

SparseHeader parse_sparse_header(std::span<const uint8_t> msg, const std::string& what) {
  ByteReader r(msg.data(), msg.size(), what);
  if (r.u32("magic") != kMagic)
    fail(what, ": not a sparse all-gather message (bad magic); the peers run with different diloco.compression "
               "or the stream is out of sync");
  if (const uint8_t v = r.u8("version"); v != kVersion)
    fail(what, ": sparse message version ", int(v), ", we speak ", int(kVersion),
         "; run the same intellect build on every node");
  const uint8_t flags = r.u8("flags");
  if (flags & ~kFlagSigned) fail(what, ": unknown header flags ", int(flags));
  if (r.u16("reserved") != 0) fail(what, ": reserved header bytes are not zero");
  SparseHeader h;
  h.is_signed = (flags & kFlagSigned) != 0;
  h.round = r.u64("round");
  h.total_elems = r.u64("total_elems");
  h.world = r.u32("world");
  h.step = r.u32("step");
  h.source = r.u32("source");
  h.chunk = r.u32("chunk");
  h.count = r.u32("count");
  h.block = r.u32("block");
  h.k = r.u32("k");
  h.lane = r.u32("lane");
  sparse_check_params(h.block, h.k, what.c_str());
  const size_t want = sparse_encoded_bytes(h.count, h.block, h.k) + (h.is_signed ? kSparseSignedBytes : 0);
  if (r.remaining() != want)
    fail(what, ": payload of ", r.remaining(), " bytes, but ", h.count, " values keeping ", h.k, " per ", h.block,
         h.is_signed ? " and two signatures" : "", " take ", want, " bytes (truncated or corrupt message)");
  return h;
}

size_t default_sparse_chunk_blocks(size_t block, size_t k, bool keyed) {
  const size_t plain = 64;
  if (!keyed) return plain;
  const size_t per_block = sparse_encoded_bytes(block, block, k);
  return std::max(plain, (kKeyedSparseChunkBytes + per_block - 1) / per_block);
}

bool is_sparse_message(std::span<const uint8_t> msg) {
  return msg.size() >= 4 && (msg[0] | (msg[1] << 8) | (msg[2] << 16) | (uint32_t{msg[3]} << 24)) == kMagic;
}

void expect_sparse_header(const SparseHeader& got, const SparseHeader& want, const std::string& what) {
  auto check = [&](const char* field, uint64_t g, uint64_t w, const char* hint) {
    expect_header_field(what, field, g, w, hint);
  };
  check("round", got.round, want.round, "a stale message from an earlier attempt, or peers on different rounds");
  check("world", got.world, want.world, "the peers disagree on the ring size");
  check("total_elems", got.total_elems, want.total_elems,
        "the peers have different parameter counts: check that every node runs the same model config");
  check("block", got.block, want.block, "the peers use different sparse block sizes");
  check("k", got.k, want.k, "set the same diloco.sparse_density on every node");
  check("signed", got.is_signed, want.is_signed,
        "in a node-key run every chunk is signed by its author, in a shared-secret run none is: every node must "
        "use the same mode (mesh.node_key_file)");
  check("lane", got.lane, want.lane, "the peers disagree on the ring layout (diloco.rings)");
  const char* order = "messages out of order: the peers disagree on the ring layout or chunk size";
  check("step", got.step, want.step, order);
  check("source", got.source, want.source, order);
  check("chunk", got.chunk, want.chunk, order);
  check("count", got.count, want.count, order);
}

void sparse_average_alone(std::span<const float> input, std::span<const float> residual, std::span<float> output,
                          size_t block, size_t k, SparseSent* sent) {
  if (input.size() != output.size() || (!residual.empty() && residual.size() != input.size()))
    fail("sparse_average_alone: input, residual and output sizes differ (", input.size(), ", ", residual.size(), ", ",
         output.size(), ")");
  SparseSent own;
  own.count = input.size();
  own.block = block;
  own.k = k;
  own.encoded.resize(sparse_encoded_bytes(input.size(), block, k));
  sparse_encode(input.data(), residual.empty() ? nullptr : residual.data(), input.size(), block, k,
                own.encoded.data(), "this node's pseudo-gradient");
  sparse_average(own.encoded.data(), 1, input.size(), block, k, output.data());
  if (sent) *sent = std::move(own);
}

namespace {

// The receiving side of one rank's sparse all-gather, on the calling
// thread: each message from the previous rank is checked (header, codes,
// its author's signature, the source's announced bound), kept in `all`, and
// forwarded while later ranks still need it. The sender thread only drains
// `queue`.
class SparseReceiver {
 public:
  SparseReceiver(RingLink& link, const SparseRingOptions& opt, const SparseLayout& layout, std::vector<uint8_t>& all,
                 size_t one, RingStats& stats, SendQueue& queue)
      : link_(link), opt_(opt), layout_(layout), all_(all), one_(one), stats_(stats), queue_(queue),
        N_(static_cast<size_t>(opt.world)), r_(static_cast<size_t>(opt.rank)), prev_((r_ + N_ - 1) % N_),
        keyed_(opt.signer != nullptr), check_(opt.announced_norms, opt.rank, opt.world, opt.norm_slack),
        arrived_(keyed_ ? N_ : 0, keyed_ ? layout.n_chunks : 0) {}

  // Step t, chunk c: rank r − t − 1's contribution; it goes on while t + 2 < N.
  void receive(size_t t, size_t c) {
    const size_t source = (r_ + N_ - t - 1) % N_;
    const SparseHeader want = layout_.header(t, source, c);
    const std::string what = str("sparse all-gather message (step ", t, ", contribution of rank ", source, ", chunk ",
                                 c, ") from the previous rank");
    const RingClock::time_point tw = RingClock::now();
    std::vector<uint8_t> msg = link_.recv_from_prev(message_deadline(opt_.message_timeout, opt_.deadline));
    stats_.recv_wait_s += seconds_since(tw);
    const RingClock::time_point d = RingClock::now();
    stats_.bytes_received += msg.size();
    stats_.messages_received += 1;
    expect_sparse_header(parse_sparse_header(msg, what), want, what);
    const uint8_t* payload = msg.data() + kSparseHeaderBytes;
    const size_t bytes = sparse_encoded_bytes(want.count, opt_.block, opt_.k);
    sparse_validate(payload, want.count, opt_.block, opt_.k, what.c_str());
    SparseDigest digest{};
    if (keyed_) digest = check_author(msg, source, prev_, opt_, what);  // before it is kept or forwarded
    if (opt_.attack_false_accusation && t == 0 && c == 0) {
      if (opt_.attack_false_accusation == 2) msg[msg.size() - kSparseSignedBytes] ^= 1;  // the author's signature
      throw ContributionExceedsAnnouncement(str(what, ": (a false accusation, intellect_chaos --byzantine)"),
                                            static_cast<int>(source), {std::move(msg)});
    }
    std::memcpy(all_.data() + source * one_ + layout_.chunk_at(c), payload, bytes);
    if (check_.enabled() || keyed_) {
      double ss = 0.0;
      sparse_for_each(payload, want.count, opt_.block, opt_.k, [&](size_t, float v) { ss += double(v) * double(v); });
      if (keyed_) arrived_.record(source, c, ss, msg);
      try {
        check_.add(source, ss, what);  // before it is forwarded
      } catch (const ContributionExceedsAnnouncement& e) {
        accuse(e, source, t);
      }
    }
    stats_.decode_s += seconds_since(d);
    if (t + 2 < N_) {
      const uint32_t next_step = static_cast<uint32_t>(t + 1);
      std::memcpy(msg.data() + kSparseStepOffset, &next_step, 4);
      if (keyed_) sign_sparse_forward(msg, *opt_.signer, digest);  // the step is in what it signs
      if (opt_.attack_alter_forwarded) alter_forwarded(msg, opt_);
      queue_.push(std::move(msg));
    }
  }

 private:
  // A source above its bound: keyed, its author is accused on its own signed
  // chunks when they prove it (provable_excess); otherwise the predecessor
  // is named without evidence, as before.
  [[noreturn]] void accuse(const ContributionExceedsAnnouncement& e, size_t source, size_t step) {
    if (!keyed_) throw e;  // shared secret: the predecessor, on the successor's word
    std::string note;
    std::vector<std::vector<uint8_t>> proof = provable_excess(
        opt_, source, check_.bound(source), arrived_,
        [&](size_t c, const Signature& sig) {
          return layout_.message(step, source, c, all_.data() + source * one_ + layout_.chunk_at(c), &sig);
        },
        &note);
    if (proof.empty()) throw ContributionExceedsAnnouncement(str(e.what(), note), static_cast<int>(prev_));
    throw ContributionExceedsAnnouncement(str(e.what(), note), static_cast<int>(source), std::move(proof));
  }

  RingLink& link_;
  const SparseRingOptions& opt_;
  const SparseLayout& layout_;
  std::vector<uint8_t>& all_;  // every contribution, `one_` bytes each, in rank order
  const size_t one_;
  RingStats& stats_;
  SendQueue& queue_;
  const size_t N_, r_, prev_;
  const bool keyed_;
  SourceNormCheck check_;
  ArrivedChunks arrived_;
};

}  // namespace

RingStats sparse_allgather_average(RingLink& link, const SparseRingOptions& opt, std::span<const float> input,
                                   std::span<const float> residual, std::span<float> output, SparseSent* sent,
                                   std::vector<RingCarried>* carried) {
  const auto t0 = RingClock::now();
  const std::string ctx = str("sparse all-gather round ", opt.round, " (rank ", opt.rank, " of ", opt.world, ")");
  auto refuse = [&](const auto&... why) {
    link.abort();
    fail(ctx, ": ", why..., ". The round is abandoned and the input is untouched");
  };
  if (const std::string bad = bad_arguments(opt, input, residual, output); !bad.empty()) refuse(bad);
  const size_t S = input.size(), N = static_cast<size_t>(opt.world), r = static_cast<size_t>(opt.rank);
  const size_t chunk = opt.chunk_blocks * opt.block;
  const size_t n_chunks = (S + chunk - 1) / chunk;
  if (n_chunks > UINT32_MAX) refuse("too many chunks; raise chunk_blocks");

  RingStats stats;
  if (carried) carried->clear();
  // Our contribution, encoded once (throws on our own NaN/inf before anything is sent).
  const size_t one = sparse_encoded_bytes(S, opt.block, opt.k);
  std::vector<uint8_t> all(N * one);
  {
    const RingClock::time_point t = RingClock::now();
    try {
      sparse_encode(input.data(), residual.empty() ? nullptr : residual.data(), S, opt.block, opt.k,
                    all.data() + r * one, "this node's pseudo-gradient");
    } catch (const Error& e) {
      refuse(e.what());
    }
    stats.encode_s += seconds_since(t);
  }
  const bool keyed = opt.signer != nullptr;
  const SparseLayout layout{opt, S, N, chunk, n_chunks, keyed};
  auto op_deadline = [&] { return message_deadline(opt.message_timeout, opt.deadline); };
  std::vector<std::vector<uint8_t>> own;
  if (N > 1) {
    const RingClock::time_point t = RingClock::now();
    own = layout.own_messages(r, all.data() + r * one);
    stats.encode_s += seconds_since(t);
  }

  SendQueue queue;
  FirstError first_error;
  SparseReceiver receiver(link, opt, layout, all, one, stats, queue);
  int offender = -1;
  std::vector<std::vector<uint8_t>> evidence;
  std::thread sender;
  if (N > 1) {
    sender = std::thread([&] {
      try {
        send_queued(queue, link, stats, op_deadline);
      } catch (const std::exception& e) {
        first_error.record(str("sending to the next rank: ", e.what()));
        link.abort();
      }
    });
  }
  try {
    for (std::vector<uint8_t>& msg : own) {
      if (keyed) {
        const RingClock::time_point t = RingClock::now();
        sign_sparse_message(msg, *opt.signer);
        stats.encode_s += seconds_since(t);
      }
      queue.push(std::move(msg));
    }
    for (size_t t = 0; t + 1 < N; ++t)
      for (size_t c = 0; c < n_chunks; ++c) receiver.receive(t, c);
    queue.close();
  } catch (ContributionExceedsAnnouncement& e) {
    offender = e.offender_rank;
    evidence = std::move(e.evidence);
    first_error.record(e.what());
    link.abort();
    queue.stop();
  } catch (const std::exception& e) {
    first_error.record(e.what());
    link.abort();
    queue.stop();
  }
  if (sender.joinable()) sender.join();
  if (std::string msg; first_error.get(msg)) {
    if (offender >= 0)
      throw ContributionExceedsAnnouncement(str(ctx, " failed: ", msg, ". The round is abandoned"), offender,
                                            std::move(evidence));
    fail(ctx, " failed: ", msg, ". The round is abandoned and the input is untouched; retry with a new ring");
  }

  const RingClock::time_point d = RingClock::now();
  average_chunks(all, N, S, opt, output, carried);
  stats.decode_s += seconds_since(d);
  if (sent) {
    sent->offset = 0;
    sent->count = S;
    sent->block = opt.block;
    sent->k = opt.k;
    sent->encoded.assign(all.begin() + static_cast<std::ptrdiff_t>(r * one),
                         all.begin() + static_cast<std::ptrdiff_t>((r + 1) * one));
  }
  stats.seconds = seconds_since(t0);
  return stats;
}

}  // namespace intellect
