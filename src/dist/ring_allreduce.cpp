#include "dist/ring_allreduce.h"

#include "dist/contribution_check.h"
#include "dist/finite.h"
#include "dist/lane_common.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "dist/bytes.h"
#include "dist/message_buffers.h"
#include "dist/ring_evidence.h"
#include "dist/ring_pipeline.h"
#include "dist/ring_queue.h"
#include "util/error.h"

namespace intellect {

static_assert(std::endian::native == std::endian::little, "fp32 payloads are memcpy'd: little-endian hosts only");

namespace {

constexpr uint32_t kMagic = 0x52415249;  // "IRAR" in memory order
// 2: the flags byte (signed first hops, ring_evidence.h) and the lane.
constexpr uint8_t kVersion = 2;
constexpr uint8_t kFlagSigned = 1;
constexpr uint8_t kReduceScatter = kRingPhaseReduceScatter, kAllGather = kRingPhaseAllGather;
constexpr size_t kStepOffset = 28;  // of the u32 step field (after magic..world), patched when forwarding

size_t payload_bytes(Compression c, size_t count, size_t block) { return codec_encoded_bytes(c, count, block); }

}  // namespace

std::vector<uint8_t> encode_ring_header(const RingHeader& h) {
  ByteWriter w(kRingHeaderBytes);
  w.u32(kMagic);
  w.u8(kVersion);
  w.u8(h.phase);
  w.u8(static_cast<uint8_t>(h.compression));
  w.u8(h.is_signed ? kFlagSigned : 0);
  w.u64(h.round);
  w.u64(h.total_elems);
  w.u32(h.world);
  w.u32(h.step);
  w.u32(h.segment);
  w.u32(h.chunk);
  w.u32(h.count);
  w.u32(h.int8_block);
  w.u32(h.lane);
  INTELLECT_CHECK(w.size() == kRingHeaderBytes);
  return w.take();
}

RingHeader parse_ring_header(std::span<const uint8_t> msg, const std::string& what) {
  ByteReader r(msg.data(), msg.size(), what);
  if (r.u32("magic") != kMagic)
    fail(what, ": not a ring all-reduce message (bad magic); the peer runs another protocol or the stream is out of sync");
  if (const uint8_t v = r.u8("version"); v != kVersion)
    fail(what, ": ring message version ", int(v), ", we speak ", int(kVersion), "; run the same intellect build on every node");
  RingHeader h;
  h.phase = r.u8("phase");
  if (h.phase > kDirectPhaseGather)
    fail(what, ": phase ", int(h.phase), " is none of the ring's reduce-scatter (0) and all-gather (1) and the direct "
         "pattern's (2, 3)");
  const uint8_t c = r.u8("compression");
  if (!is_ring_codec_byte(c))
    fail(what, ": compression ", int(c), " is none of fp32 (0), int8 (1), int4 (2) or int2 (4)",
         c == static_cast<uint8_t>(Compression::Sparse) ? " (sparse travels in all-gather messages)" : "");
  h.compression = static_cast<Compression>(c);
  const uint8_t flags = r.u8("flags");
  if (flags & ~kFlagSigned) fail(what, ": unknown header flags ", int(flags));
  h.is_signed = (flags & kFlagSigned) != 0;
  h.round = r.u64("round");
  h.total_elems = r.u64("total_elems");
  h.world = r.u32("world");
  h.step = r.u32("step");
  h.segment = r.u32("segment");
  h.chunk = r.u32("chunk");
  h.count = r.u32("count");
  h.int8_block = r.u32("int8_block");
  h.lane = r.u32("lane");
  if ((h.compression != Compression::None) != (h.int8_block != 0))
    fail(what, ": int8_block is ", h.int8_block, " with compression ", compression_name(h.compression),
         " (must be > 0 exactly when quantized)");
  const size_t want = payload_bytes(h.compression, h.count, h.int8_block) + (h.is_signed ? kRingSignatureBytes : 0);
  if (r.remaining() != want)
    fail(what, ": payload of ", r.remaining(), " bytes, but ", h.count, " values with compression ",
         compression_name(h.compression), h.is_signed ? " and a signature" : "", " take ", want,
         " bytes (truncated or corrupt message)");
  return h;
}

void expect_ring_header(const RingHeader& got, const RingHeader& want, const std::string& what) {
  auto check = [&](const char* field, uint64_t g, uint64_t w, const char* hint) {
    expect_header_field(what, field, g, w, hint);
  };
  check("round", got.round, want.round, "a stale message from an earlier attempt, or peers on different rounds");
  check("world", got.world, want.world, "the peers disagree on the ring size");
  check("total_elems", got.total_elems, want.total_elems,
        "the peers have different parameter counts: check that every node runs the same model config");
  check("compression", static_cast<uint64_t>(got.compression), static_cast<uint64_t>(want.compression),
        "set the same diloco.compression on every node");
  check("int8_block", got.int8_block, want.int8_block, "the peers use different quantization block sizes");
  check("lane", got.lane, want.lane, "a message of another of the round's parallel rings");
  check("signed", got.is_signed, want.is_signed,
        "one peer signs its ring messages (node keys) and the other does not: run one authentication mode");
  const char* order = "messages out of order: the peers disagree on the ring layout or chunk size";
  check("phase", got.phase, want.phase,
        (got.phase >= kDirectPhaseReduce) != (want.phase >= kDirectPhaseReduce)
            ? "one node averages over a ring and the other directly: set the same diloco.all_reduce on every node"
            : order);
  check("step", got.step, want.step, order);
  check("segment", got.segment, want.segment, order);
  check("chunk", got.chunk, want.chunk, order);
  check("count", got.count, want.count, order);
}

// With fewer chunks than ranks, segments on whole chunks would leave some
// rank without one (nothing of it checked at a first hop, and the ring's
// load on the others): such lanes (small vectors) are cut as usual and not
// audited. Every rank decides the same from the sizes.
bool lane_audited(const RingOptions& opt, size_t S) {
  const ContributionCheck check(opt.announced_norms, opt.rank, opt.world, opt.norm_slack);
  return opt.audit && check.enabled() && (S + opt.chunk_elems - 1) / opt.chunk_elems >= static_cast<size_t>(opt.world);
}

size_t lane_segment_begin(const RingOptions& opt, size_t S, bool audited, size_t s) {
  const size_t N = static_cast<size_t>(std::max(opt.world, 1));
  return audited ? aligned_segment_begin(S, N, opt.chunk_elems, s) : S * s / N;
}

std::vector<size_t> ring_chunk_counts(const RingOptions& opt, size_t S) {
  const size_t N = static_cast<size_t>(std::max(opt.world, 1));
  const bool audited = lane_audited(opt, S);
  std::vector<size_t> counts;
  for (size_t s = 0; s < N; ++s) {
    const size_t b = lane_segment_begin(opt, S, audited, s);
    const size_t e = lane_segment_begin(opt, S, audited, s + 1);
    for (size_t at = b; at < e; at += opt.chunk_elems) counts.push_back(std::min(opt.chunk_elems, e - at));
  }
  return counts;
}

std::vector<Digest> accept_leaf_message(std::span<const uint8_t> msg, const RingOptions& opt, size_t lane_elems,
                                        int sender, const std::string& what) {
  const LeafMessage m = parse_leaf_message(msg, what);
  const LeafCommitment& own = *opt.audit->own;
  auto check = [&](const char* field, uint64_t got, uint64_t want) {
    expect_header_field(what, field, got, want, "the peers cut the pseudo-gradient differently: run one config");
  };
  check("signed", m.is_signed, opt.signer != nullptr);
  check("round", m.round, opt.round);
  check("lane", m.lane, opt.lane);
  check("lanes", static_cast<uint64_t>(m.layout.lanes), static_cast<uint64_t>(own.layout.lanes));
  check("total_elems", m.total_elems, own.total_elems);
  check("lane_elems", m.lane_elems, lane_elems);
  check("compression", static_cast<uint64_t>(m.layout.compression), static_cast<uint64_t>(opt.compression));
  check("block", m.layout.block, opt.compression == Compression::None ? 0 : opt.int8_block);
  check("chunk", m.layout.chunk, opt.chunk_elems);
  Digest root{};
  std::string why;
  if (!leaf_message_root(m, &root, &why) || root != opt.audit->roots[static_cast<size_t>(sender)])
    throw ContributionExceedsAnnouncement(
        str(what, ": ", why.empty() ? str("it does not hash to the commitment rank ", sender, " announced") : why,
            ": rank ", sender, " sent other than it committed to"),
        sender, {std::vector<uint8_t>(msg.begin(), msg.end())});
  return m.leaves;
}

namespace {

// One lane's all-reduce, as three kinds of thread share it: the calling
// thread receives each message the schedule says comes next and checks its
// header; the codec pool (RingOptions::codec_threads) validates, decodes and
// adds, and re-encodes it; the sender thread hands the outgoing messages to
// the link in schedule order. Each message's work touches only its own
// chunk of the output, and a chunk's all-gather message can only arrive
// after this rank's reduce-scatter message for it left, so jobs on
// different chunks never race.
class LaneRun {
 public:
  LaneRun(RingLink& link, const RingOptions& opt, std::span<const float> input, std::span<float> output,
          std::vector<RingCarried>* carried)
      : link_(link),
        opt_(opt),
        in_(input),
        out_(output),
        S_(output.size()),
        N_(static_cast<size_t>(opt.world)),
        r_(static_cast<size_t>(opt.rank)),
        codec_(make_block_codec(opt.compression, opt.int8_block, 1)),
        check_(opt.announced_norms, opt.rank, opt.world, opt.norm_slack, opt.signer != nullptr),
        kept_(opt, *codec_, output.size(), carried, "ring") {
    audit_ = lane_audited(opt, S_);
    first_chunk_of_.assign(N_ + 1, 0);
    for (size_t s = 0; s < N_; ++s) first_chunk_of_[s + 1] = first_chunk_of_[s] + n_chunks(s);
  }

  // Runs the round; the first failure (with the offender, if a contribution
  // check named one) is left for failed() and offender().
  void run();
  RingStats stats() const { return stats_; }
  LaneFailure& failure() { return failure_; }

 private:
  enum class JobKind { EncodeOwn, ReduceHop, GatherHop };
  struct Job {
    JobKind kind = JobKind::EncodeOwn;
    RingHeader h;                  // the message received (or, for EncodeOwn, sent)
    uint64_t seq = UINT64_MAX;     // the outgoing message's place in the schedule; none: UINT64_MAX
    std::vector<uint8_t> msg;      // received
  };

  size_t seg_begin(size_t s) const { return lane_segment_begin(opt_, S_, audit_, s); }
  size_t seg_len(size_t s) const { return seg_begin(s + 1) - seg_begin(s); }
  size_t n_chunks(size_t s) const { return (seg_len(s) + opt_.chunk_elems - 1) / opt_.chunk_elems; }
  size_t wrap(int64_t s) const { return static_cast<size_t>(((s % int64_t(N_)) + int64_t(N_)) % int64_t(N_)); }
  size_t chunk_off(size_t seg, size_t c) const { return seg_begin(seg) + c * opt_.chunk_elems; }
  size_t chunk_len(size_t seg, size_t c) const {
    return std::min(opt_.chunk_elems, seg_begin(seg) + seg_len(seg) - chunk_off(seg, c));
  }
  RingClock::time_point op_deadline() const { return message_deadline(opt_.message_timeout, opt_.deadline); }
  RingHeader header(uint8_t phase, size_t step, size_t seg, size_t chunk) const;

  void send_loop();
  std::vector<uint8_t> build(const RingHeader& h, const float* x);
  std::vector<uint8_t> receive(const RingHeader& want);
  void check_payload(const Job& job, const std::string& what);
  void check_contribution(const Job& job, double ss, const std::string& what);
  void send_leaves(uint64_t seq);
  void receive_leaves();
  void check_leaf(const Job& job, const std::string& what);
  void keep_chunk(const RingHeader& h, const uint8_t* payload);
  void check_input(const RingHeader& h);
  void refuse_non_finite_input(const RingHeader& h);
  void run_job(Job& job);
  void fail_round(std::exception_ptr e);
  void add_times(double encode_s, double decode_s);

  RingLink& link_;
  const RingOptions& opt_;
  std::span<const float> in_;
  std::span<float> out_;
  const size_t S_, N_, r_;
  const std::unique_ptr<BlockCodec> codec_;
  ContributionCheck check_;
  std::mutex check_mu_;  // check_ and the codec times, from the pool's threads
  CarriedChunks kept_;
  std::vector<size_t> first_chunk_of_;  // the lane's index (offset order) of each segment's first chunk
  OrderedSendQueue queue_;
  LaneFailure failure_;
  // The commitment audit: on, and the predecessor's leaves of this lane and
  // the message that carried them (written before any hop job is submitted).
  bool audit_ = false;
  std::vector<Digest> prev_leaves_;
  std::vector<uint8_t> prev_leaf_msg_;
  RingStats stats_;
};

RingHeader LaneRun::header(uint8_t phase, size_t step, size_t seg, size_t chunk) const {
  RingHeader h;
  h.phase = phase;
  h.compression = opt_.compression;
  h.round = opt_.round;
  h.total_elems = S_;
  h.world = static_cast<uint32_t>(N_);
  h.step = static_cast<uint32_t>(step);
  h.segment = static_cast<uint32_t>(seg);
  h.chunk = static_cast<uint32_t>(chunk);
  h.count = static_cast<uint32_t>(chunk_len(seg, chunk));
  h.int8_block = codec_->block();
  // Only the first hop is signed: it carries the sender's own contribution,
  // where an understated norm and a broken commitment show (signing every
  // message would cost a BLAKE2b pass over all the traffic).
  h.is_signed = opt_.signer != nullptr && phase == kReduceScatter && step == 0;
  h.lane = opt_.lane;
  return h;
}

void LaneRun::add_times(double encode_s, double decode_s) {
  std::lock_guard<std::mutex> lock(check_mu_);
  stats_.encode_s += encode_s;
  stats_.decode_s += decode_s;
}

// Header + payload for h.count values at x: their encoding.
std::vector<uint8_t> LaneRun::build(const RingHeader& h, const float* x) {
  const RingClock::time_point t = RingClock::now();
  std::vector<uint8_t> msg = new_ring_message(h);
  codec_->encode(x, h.count, msg.data() + kRingHeaderBytes, "the partial sum");
  if (h.is_signed) {
    // An audited first hop is a committed leaf: its digest is known already.
    const Digest* leaf = nullptr;
    if (audit_) {
      const std::vector<Digest>& own = opt_.audit->own->leaves[opt_.lane];
      const size_t i = seg_begin(h.segment) / opt_.chunk_elems + h.chunk;
      if (i < own.size()) leaf = &own[i];
    }
    sign_ring_message(msg, *opt_.signer, leaf);
  }
  add_times(seconds_since(t), 0.0);
  return msg;
}

void LaneRun::send_loop() {
  try {
    send_queued(queue_, link_, stats_, [&] { return op_deadline(); });
  } catch (const std::exception& e) {
    fail_round(std::make_exception_ptr(Error(str("sending to the next rank: ", e.what()))));  // unblocks the receiver
  }
}

// The message the schedule says comes next, its header checked (the
// payload is checked by its job).
std::vector<uint8_t> LaneRun::receive(const RingHeader& want) {
  const RingClock::time_point t = RingClock::now();
  std::vector<uint8_t> msg = link_.recv_from_prev(op_deadline());
  stats_.recv_wait_s += seconds_since(t);
  stats_.bytes_received += msg.size();
  stats_.messages_received += 1;
  const std::string what = str(want.phase == kReduceScatter ? "reduce-scatter" : "all-gather", " message (step ",
                               want.step, ", segment ", want.segment, ", chunk ", want.chunk, ") from the previous rank");
  expect_ring_header(parse_ring_header(msg, what), want, what);
  return msg;
}

// This rank's leaves of this lane, first in the lane's schedule.
void LaneRun::send_leaves(uint64_t seq) {
  queue_.put(seq, own_leaf_message(opt_, S_));
}

// The predecessor's leaves: they must fit this lane and hash to the root it
// announced; a signed message that does not is evidence on its own.
void LaneRun::receive_leaves() {
  const std::string what = "commitment leaf message from the previous rank";
  const RingClock::time_point t = RingClock::now();
  std::vector<uint8_t> msg = link_.recv_from_prev(op_deadline());
  stats_.recv_wait_s += seconds_since(t);
  stats_.bytes_received += msg.size();
  stats_.messages_received += 1;
  prev_leaves_ = accept_leaf_message(msg, opt_, S_, static_cast<int>(wrap(int64_t(r_) - 1)), what);
  prev_leaf_msg_ = std::move(msg);
}

// A step-0 message carries its sender's own leaf: its bytes must hash to it.
void LaneRun::check_leaf(const Job& job, const std::string& what) {
  const size_t leaf = seg_begin(job.h.segment) / opt_.chunk_elems + job.h.chunk;
  const Digest d = leaf_digest({job.msg.data() + kRingHeaderBytes, codec_->encoded_bytes(job.h.count)});
  if (leaf < prev_leaves_.size() && d == prev_leaves_[leaf]) return;
  const int prev = static_cast<int>(wrap(int64_t(r_) - 1));
  throw ContributionExceedsAnnouncement(str(what, ": its bytes do not match leaf ", leaf, " of the commitment rank ",
                                            prev, " announced: rank ", prev, " sent other than it committed to"),
                                        prev, {prev_leaf_msg_, job.msg});
}

// What a payload must pass before its values are used: its commitment leaf
// (first hops), finite tables or values, and (chaos only) a forged accusation.
void LaneRun::check_payload(const Job& job, const std::string& what) {
  const uint8_t* payload = job.msg.data() + kRingHeaderBytes;
  if (audit_ && job.h.phase == kReduceScatter && job.h.step == 0) check_leaf(job, what);
  codec_->validate(payload, job.h.count, what.c_str());
  if (opt_.attack_false_accusation && job.h.phase == kReduceScatter && job.h.step == 0 && job.h.chunk == 0) {
    std::vector<uint8_t> forged = job.msg;
    if (opt_.attack_false_accusation == 2) forged.back() ^= 1;
    throw ContributionExceedsAnnouncement(str(what, ": (a false accusation, intellect_chaos --byzantine)"),
                                          static_cast<int>(wrap(int64_t(r_) - 1)), {std::move(forged)});
  }
}

// The announced-norm check of a payload whose sum of squares the decode pass
// (BlockCodec::decode_fused) computed: after check_payload, before the
// chunk's values go on or are kept.
void LaneRun::check_contribution(const Job& job, double ss, const std::string& what) {
  if (!check_.enabled()) return;
  std::lock_guard<std::mutex> lock(check_mu_);
  check_.add(job.h.phase == kAllGather, job.h.step, ss, what,
             job.h.is_signed ? std::span<const uint8_t>(job.msg) : std::span<const uint8_t>());
}

void LaneRun::keep_chunk(const RingHeader& h, const uint8_t* payload) {
  kept_.keep(first_chunk_of_[h.segment] + h.chunk, payload);
}

// Our own NaN/inf must not leave this rank: the error names the input
// value. Called where a pass saw a non-finite value; a sum that overflowed
// from finite inputs is not refused here (the next encode or the next
// rank's validate does, as before the hop's passes were fused).
void LaneRun::refuse_non_finite_input(const RingHeader& h) {
  intellect::refuse_non_finite_input(in_, chunk_off(h.segment, h.chunk), h.count);
}

// A step-0 chunk of our own segment, before its encoding. It is encoded
// straight from the input: the output's copy of segment r is written by
// its all-gather hop, so copying it there first would be a wasted pass. Done
// per chunk, not up front: one pass over the whole input would delay the
// first message by that pass (about 0.1 s at 277M values).
void LaneRun::check_input(const RingHeader& h) {
  if (first_non_finite(in_.data() + chunk_off(h.segment, h.chunk), h.count) < h.count) refuse_non_finite_input(h);
}

void LaneRun::run_job(Job& job) {
  const RingHeader& h = job.h;
  float* x = out_.data() + chunk_off(h.segment, h.chunk);
  if (job.kind == JobKind::EncodeOwn) {
    check_input(h);
    queue_.put(job.seq, build(h, in_.data() + chunk_off(h.segment, h.chunk)));
    return;
  }
  const std::string what = str(h.phase == kReduceScatter ? "reduce-scatter" : "all-gather", " message (step ", h.step,
                               ", segment ", h.segment, ", chunk ", h.chunk, ") from the previous rank");
  const RingClock::time_point d = RingClock::now();
  check_payload(job, what);
  const uint8_t* payload = job.msg.data() + kRingHeaderBytes;
  // One pass decodes (and adds) and sums the squares for the contribution
  // check; a check that fails leaves the chunk written, which a failed
  // round's output may be anyway.
  double ss = 0.0;
  double* want_ss = check_.enabled() ? &ss : nullptr;
  if (job.kind == JobKind::GatherHop) {
    codec_->decode_fused(payload, h.count, nullptr, x, want_ss);
    check_contribution(job, ss, what);
    keep_chunk(h, payload);
    add_times(0.0, seconds_since(d));
    if (job.seq == UINT64_MAX) return MessageBuffers::process().give(std::move(job.msg));
    // The owner's bytes go on unchanged, but for the step.
    const uint32_t next_step = h.step + 1;
    std::memcpy(job.msg.data() + kStepOffset, &next_step, 4);
    queue_.put(job.seq, std::move(job.msg));
    return;
  }
  // Each segment but r arrives exactly once in the reduce-scatter: the
  // input's chunk is read here, and only here, with the payload added.
  const bool non_finite = codec_->decode_fused(payload, h.count, in_.data() + chunk_off(h.segment, h.chunk), x, want_ss);
  check_contribution(job, ss, what);
  if (non_finite) refuse_non_finite_input(h);
  MessageBuffers::process().give(std::move(job.msg));  // added in: its pages serve a later message
  add_times(0.0, seconds_since(d));
  if (h.step + 2 < N_) {
    queue_.put(job.seq, build(header(kReduceScatter, h.step + 1, h.segment, h.chunk), x));
    return;
  }
  // The segment r + 1: this rank owns the chunk's full sum. Average, quantize
  // once, and keep the decoded values so every rank agrees bit for bit.
  for (size_t i = 0; i < h.count; ++i) x[i] /= static_cast<float>(N_);
  std::vector<uint8_t> avg = build(header(kAllGather, 0, h.segment, h.chunk), x);
  if (codec_->lossy()) codec_->decode(avg.data() + kRingHeaderBytes, h.count, x);
  keep_chunk(h, avg.data() + kRingHeaderBytes);
  queue_.put(job.seq, std::move(avg));
}

// The first failure wins; the link is aborted (unblocking the other threads
// and telling the neighbours) and what is queued is dropped.
void LaneRun::fail_round(std::exception_ptr e) {
  failure_.record(e);
  link_.abort();
  queue_.stop();
}

void LaneRun::run() {
  // A few messages per worker in flight: enough that no worker waits for
  // the receiving thread, few enough that the transport's inbox, not this
  // lane, holds what the previous rank sent ahead.
  const int workers = std::max(1, opt_.codec_threads);
  CodecPool<Job> pool(workers, 2 * static_cast<size_t>(workers) + 2, [this](Job& j) { run_job(j); },
                      [this](std::exception_ptr e) { fail_round(e); });
  std::thread sender([this] { send_loop(); });
  uint64_t seq = 0;
  try {
    bool go = true;
    if (audit_) send_leaves(seq++);
    // Reduce-scatter, step 0: this rank's own segment r, from the input copy.
    for (size_t c = 0; go && c < n_chunks(r_); ++c)
      go = pool.submit(Job{JobKind::EncodeOwn, header(kReduceScatter, 0, r_, c), seq++, {}});
    if (audit_) receive_leaves();
    // Reduce-scatter, received at steps 0..N−2: each accumulated chunk goes on at once.
    for (size_t t = 0; go && t + 1 < N_; ++t) {
      const size_t g = wrap(int64_t(r_) - int64_t(t) - 1);
      for (size_t c = 0; go && c < n_chunks(g); ++c) {
        const RingHeader want = header(kReduceScatter, t, g, c);
        go = pool.submit(Job{JobKind::ReduceHop, want, seq++, receive(want)});
      }
    }
    // All-gather: each owner's bytes, passed on unchanged until the rank
    // before the owner.
    for (size_t t = 0; go && t + 1 < N_; ++t) {
      const size_t g = wrap(int64_t(r_) - int64_t(t));
      for (size_t c = 0; go && c < n_chunks(g); ++c) {
        const RingHeader want = header(kAllGather, t, g, c);
        const uint64_t out_seq = t + 2 < N_ ? seq++ : UINT64_MAX;
        go = pool.submit(Job{JobKind::GatherHop, want, out_seq, receive(want)});
      }
    }
    pool.wait_idle();
    queue_.close(seq);
  } catch (const std::exception&) {
    fail_round(std::current_exception());
    pool.stop();
  }
  pool.wait_idle();
  sender.join();
}

}  // namespace

RingStats ring_allreduce_average(RingLink& link, const RingOptions& opt, std::span<const float> input,
                                 std::span<float> output, std::vector<RingCarried>* carried) {
  const auto t0 = RingClock::now();
  const std::string ctx = str("ring all-reduce round ", opt.round, " (rank ", opt.rank, " of ", opt.world, ")");
  // A rank that cannot take part aborts its link at once, so that its
  // neighbours fail now instead of at their deadline.
  auto refuse = [&](const auto&... why) {
    link.abort();
    fail(ctx, ": ", why..., ". The round is abandoned and the input is untouched");
  };
  if (const std::string why = round_argument_error(opt, input, output, carried != nullptr); !why.empty()) refuse(why);
  // In place (the very same span) is allowed: each chunk of the input is
  // read once, by its step-0 encoding or in the same pass as its reduce-
  // scatter hop writes that chunk of the output, value by value.
  // A failed round then leaves it part-averaged: the caller rebuilds it.
  if (carried) carried->clear();
  if (opt.world == 1) {
    if (const std::string why = average_alone(input, output); !why.empty()) refuse(why);
    RingStats stats;
    stats.seconds = std::chrono::duration<double>(RingClock::now() - t0).count();
    return stats;
  }

  // Our own NaN/inf is refused chunk by chunk, before that chunk's first
  // encoding or its reduce-scatter hop (LaneRun::check_input,
  // refuse_non_finite_input): nothing non-finite of ours leaves.
  LaneRun lane(link, opt, input, output, carried);
  lane.run();
  if (std::string msg; lane.failure().failed(msg)) {
    if (carried) carried->clear();
    throw_lane_failure(ctx, lane.failure(), opt, -1, opt.prev_key ? &*opt.prev_key : nullptr,
                       !opt.attack_false_accusation);
  }
  RingStats stats = lane.stats();
  stats.seconds = std::chrono::duration<double>(RingClock::now() - t0).count();
  return stats;
}

}  // namespace intellect
