#include "dist/direct_allreduce.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "dist/contribution_check.h"
#include "dist/finite.h"
#include "dist/lane_common.h"
#include "dist/message_buffers.h"
#include "dist/ring_evidence.h"
#include "dist/ring_pipeline.h"
#include "dist/ring_queue.h"
#include "util/error.h"

namespace intellect {

namespace {

// One lane's direct round (direct_allreduce.h). Three kinds of thread share
// it: a receiving thread per peer checks headers and submits jobs; the
// codec pool runs them; a sending thread per peer drains that peer's
// ordered queue into its link.
class DirectRun {
 public:
  DirectRun(std::span<RingLink* const> peers, const RingOptions& opt, std::span<const float> input,
            std::span<float> output, const LeafCommitment* committed, std::vector<RingCarried>* carried)
      : peers_(peers.begin(), peers.end()),
        opt_(opt),
        in_(input),
        out_(output),
        S_(output.size()),
        N_(static_cast<size_t>(opt.world)),
        r_(static_cast<size_t>(opt.rank)),
        codec_(make_block_codec(opt.compression, opt.int8_block, 1)),
        check_(opt.announced_norms, opt.world, opt.norm_slack, opt.signer != nullptr),
        kept_(opt, *codec_, output.size(), carried, "direct"),
        queues_(N_),
        peer_stats_(N_),
        peer_leaves_(N_) {
    audit_ = lane_audited(opt, S_);
    first_chunk_of_.assign(N_ + 1, 0);
    for (size_t s = 0; s < N_; ++s) first_chunk_of_[s + 1] = first_chunk_of_[s] + n_chunks(s);
    // Our own chunks as committed: only on the aligned cut, where a
    // segment's chunks are the commitment's leaves.
    if (audit_ && committed && opt.lane < committed->encoded.size() && opt.lane < committed->leaves.size() &&
        committed->layout.chunk == opt.chunk_elems && committed->layout.compression == opt.compression &&
        committed->layout.block == codec_->block() &&
        committed->leaves[opt.lane].size() == (S_ + opt.chunk_elems - 1) / opt.chunk_elems)
      committed_ = committed;
    held_.resize(n_chunks(r_));
    for (auto& h : held_) h.resize(N_);
    arrived_ = std::make_unique<std::atomic<size_t>[]>(n_chunks(r_));
    for (size_t c = 0; c < n_chunks(r_); ++c) arrived_[c] = 0;
  }

  void run();
  RingStats stats() const;
  LaneFailure& failure() { return failure_; }

 private:
  enum class JobKind { SendOwn, Contribution, Average };
  struct Job {
    JobKind kind = JobKind::SendOwn;
    size_t from = 0;           // the peer it came from (SendOwn: the peer it goes to)
    RingHeader h;              // as received (SendOwn: to send)
    std::vector<uint8_t> msg;  // received
  };

  size_t seg_begin(size_t s) const { return lane_segment_begin(opt_, S_, audit_, s); }
  size_t n_chunks(size_t s) const {
    return (seg_begin(s + 1) - seg_begin(s) + opt_.chunk_elems - 1) / opt_.chunk_elems;
  }
  size_t chunk_off(size_t s, size_t c) const { return seg_begin(s) + c * opt_.chunk_elems; }
  size_t chunk_len(size_t s, size_t c) const { return std::min(opt_.chunk_elems, seg_begin(s + 1) - chunk_off(s, c)); }
  size_t leaf_index(size_t s, size_t c) const { return chunk_off(s, c) / opt_.chunk_elems; }
  // Where a peer's queue holds our leaf message, our contribution's chunk c
  // of its segment, and our average's chunk c.
  uint64_t leaf_count() const { return audit_ ? 1 : 0; }
  uint64_t contribution_seq(size_t c) const { return leaf_count() + c; }
  uint64_t average_seq(size_t peer, size_t c) const { return leaf_count() + n_chunks(peer) + c; }
  RingClock::time_point op_deadline() const { return message_deadline(opt_.message_timeout, opt_.deadline); }
  RingHeader header(uint8_t phase, size_t seg, size_t chunk) const;
  std::string message_name(const RingHeader& h, size_t from) const;

  void receive_from(size_t peer);
  std::vector<uint8_t> receive_raw(size_t peer);
  std::vector<uint8_t> receive(size_t peer, const RingHeader& want);
  void run_job(Job& job);
  void send_own(const Job& job);
  void take_contribution(Job& job);
  void reduce_chunk(size_t c);
  void take_average(Job& job);
  void own_encoding(size_t seg, size_t c, uint8_t* out);
  void keep_chunk(size_t seg, size_t c, const uint8_t* payload) { kept_.keep(first_chunk_of_[seg] + c, payload); }
  void refuse_non_finite_input(size_t seg, size_t c) {
    intellect::refuse_non_finite_input(in_, chunk_off(seg, c), chunk_len(seg, c));
  }
  void fail_round(std::exception_ptr e);
  void add_times(double encode_s, double decode_s);

  std::vector<RingLink*> peers_;
  const RingOptions& opt_;
  std::span<const float> in_;
  std::span<float> out_;
  const size_t S_, N_, r_;
  const std::unique_ptr<BlockCodec> codec_;
  DirectNormCheck check_;
  std::mutex check_mu_;  // check_ and the codec times
  CarriedChunks kept_;
  const LeafCommitment* committed_ = nullptr;
  bool audit_ = false;
  std::vector<size_t> first_chunk_of_;
  std::vector<OrderedSendQueue> queues_;   // by peer rank
  std::vector<RingStats> peer_stats_;      // by peer rank: its sender's and its receiver's counts
  std::vector<std::vector<Digest>> peer_leaves_;         // written by that peer's receiver before its jobs
  std::vector<std::vector<std::vector<uint8_t>>> held_;  // [chunk of our segment][rank]: contributions
  std::unique_ptr<std::atomic<size_t>[]> arrived_;       // per chunk of our segment: contributions held
  double encode_s_ = 0.0, decode_s_ = 0.0;
  CodecPool<Job>* pool_ = nullptr;  // run()'s, while it runs
  LaneFailure failure_;
};

RingHeader DirectRun::header(uint8_t phase, size_t seg, size_t chunk) const {
  RingHeader h;
  h.phase = phase;
  h.compression = opt_.compression;
  h.round = opt_.round;
  h.total_elems = S_;
  h.world = static_cast<uint32_t>(N_);
  h.step = 0;
  h.segment = static_cast<uint32_t>(seg);
  h.chunk = static_cast<uint32_t>(chunk);
  h.count = static_cast<uint32_t>(chunk_len(seg, chunk));
  h.int8_block = codec_->block();
  // A contribution is its sender's own: signed, as a ring's first hop. So is
  // an owner's average: an owner that inflates it is then shown by its own
  // signed messages, as a contributor that sends more than it announced.
  h.is_signed = opt_.signer != nullptr;
  h.lane = opt_.lane;
  return h;
}

std::string DirectRun::message_name(const RingHeader& h, size_t from) const {
  return str(h.phase == kDirectPhaseReduce ? "contribution" : "average", " message (segment ", h.segment, ", chunk ",
             h.chunk, ") from rank ", from);
}

void DirectRun::add_times(double encode_s, double decode_s) {
  std::lock_guard<std::mutex> lock(check_mu_);
  encode_s_ += encode_s;
  decode_s_ += decode_s;
}

RingStats DirectRun::stats() const {
  RingStats s;
  for (const RingStats& p : peer_stats_) {
    s.bytes_sent += p.bytes_sent;
    s.bytes_received += p.bytes_received;
    s.messages_sent += p.messages_sent;
    s.messages_received += p.messages_received;
    // The links run side by side: the slowest one's waits are the round's.
    s.recv_wait_s = std::max(s.recv_wait_s, p.recv_wait_s);
    s.send_s = std::max(s.send_s, p.send_s);
  }
  s.encode_s = encode_s_;
  s.decode_s = decode_s_;
  return s;
}

// The next message from `peer`, counted and timed.
std::vector<uint8_t> DirectRun::receive_raw(size_t peer) {
  const RingClock::time_point t = RingClock::now();
  std::vector<uint8_t> msg = peers_[peer]->recv_from_prev(op_deadline());
  RingStats& st = peer_stats_[peer];
  st.recv_wait_s += seconds_since(t);
  st.bytes_received += msg.size();
  st.messages_received += 1;
  return msg;
}

std::vector<uint8_t> DirectRun::receive(size_t peer, const RingHeader& want) {
  std::vector<uint8_t> msg = receive_raw(peer);
  const std::string what = message_name(want, peer);
  expect_ring_header(parse_ring_header(msg, what), want, what);
  return msg;
}

// Everything `peer` sends us, in its schedule: its leaves, its contribution
// to our segment, then its average of its own segment.
void DirectRun::receive_from(size_t peer) {
  if (audit_) {
    const std::vector<uint8_t> msg = receive_raw(peer);
    peer_leaves_[peer] = accept_leaf_message(msg, opt_, S_, static_cast<int>(peer),
                                             str("commitment leaf message from rank ", peer));
  }
  for (size_t c = 0; c < n_chunks(r_); ++c) {
    const RingHeader want = header(kDirectPhaseReduce, r_, c);
    std::vector<uint8_t> msg = receive(peer, want);
    if (!pool_->submit(Job{JobKind::Contribution, peer, want, std::move(msg)})) return;
  }
  for (size_t c = 0; c < n_chunks(peer); ++c) {
    const RingHeader want = header(kDirectPhaseGather, peer, c);
    std::vector<uint8_t> msg = receive(peer, want);
    if (!pool_->submit(Job{JobKind::Average, peer, want, std::move(msg)})) return;
  }
}

// Our contribution's chunk c of segment `seg` into `out`: the committed
// leaf when we kept it, otherwise encoded here (our NaN/inf refused first).
void DirectRun::own_encoding(size_t seg, size_t c, uint8_t* out) {
  const size_t n = chunk_len(seg, c);
  if (committed_) {
    const std::span<const uint8_t> leaf = committed_->leaf_bytes(opt_.lane, leaf_index(seg, c));
    std::memcpy(out, leaf.data(), leaf.size());
    return;
  }
  const float* x = in_.data() + chunk_off(seg, c);
  if (first_non_finite(x, n) < n) refuse_non_finite_input(seg, c);
  const RingClock::time_point t = RingClock::now();
  codec_->encode(x, n, out, "the pseudo-gradient");
  add_times(seconds_since(t), 0.0);
}

void DirectRun::send_own(const Job& job) {
  const RingHeader& h = job.h;
  std::vector<uint8_t> msg = new_ring_message(h);
  own_encoding(h.segment, h.chunk, msg.data() + kRingHeaderBytes);
  if (h.is_signed) {
    // A committed leaf's digest is known already: no pass over the payload.
    const Digest* leaf = audit_ ? &opt_.audit->own->leaves[opt_.lane][leaf_index(h.segment, h.chunk)] : nullptr;
    sign_ring_message(msg, *opt_.signer, leaf);
  }
  queues_[job.from].put(contribution_seq(h.chunk), std::move(msg));
}

// A peer's contribution to our segment: audited against its leaf and
// validated now; summed once every peer's is in.
void DirectRun::take_contribution(Job& job) {
  const std::string what = message_name(job.h, job.from);
  const uint8_t* payload = job.msg.data() + kRingHeaderBytes;
  const size_t bytes = codec_->encoded_bytes(job.h.count);
  if (audit_) {
    const size_t leaf = leaf_index(job.h.segment, job.h.chunk);
    const std::vector<Digest>& leaves = peer_leaves_[job.from];
    if (leaf >= leaves.size() || leaf_digest({payload, bytes}) != leaves[leaf])
      throw ContributionExceedsAnnouncement(
          str(what, ": its bytes do not match leaf ", leaf, " of the commitment rank ", job.from,
              " announced: rank ", job.from, " sent other than it committed to"),
          static_cast<int>(job.from));
  }
  const RingClock::time_point t = RingClock::now();
  codec_->validate(payload, job.h.count, what.c_str());
  add_times(0.0, seconds_since(t));
  held_[job.h.chunk][job.from] = std::move(job.msg);
  if (arrived_[job.h.chunk].fetch_add(1) + 1 == N_ - 1) reduce_chunk(job.h.chunk);
}

// Chunk c of our segment: our own contribution as it is (unquantized, as
// a ring's owner adds its own: no encode or decode of it here) plus the
// others' decoded in rank order, averaged, quantized once, sent to all.
void DirectRun::reduce_chunk(size_t c) {
  const RingHeader h = header(kDirectPhaseGather, r_, c);
  float* x = out_.data() + chunk_off(r_, c);
  const float* own = in_.data() + chunk_off(r_, c);  // in place, x itself: read before written, value by value
  // Our own NaN/inf is named as such before anything is summed (it never
  // left: no message carries our segment's contribution).
  if (first_non_finite(own, h.count) < h.count) refuse_non_finite_input(r_, c);
  const RingClock::time_point t = RingClock::now();
  // Every other member's contribution in rank order, added onto our own and
  // divided by N in one pass (the chunk is read and written once), each
  // one's sum of squares for the check.
  std::vector<const uint8_t*> payloads;
  std::vector<size_t> sources;
  for (size_t k = 0; k < N_; ++k)
    if (k != r_) payloads.push_back(held_[c][k].data() + kRingHeaderBytes), sources.push_back(k);
  std::vector<double> ss(payloads.size(), 0.0);
  const bool non_finite = codec_->average_fused(payloads.data(), payloads.size(), h.count, own, x,
                                                static_cast<float>(N_), check_.enabled() ? ss.data() : nullptr);
  if (check_.enabled()) {
    std::lock_guard<std::mutex> lock(check_mu_);
    for (size_t j = 0; j < sources.size(); ++j) {
      const size_t k = sources[j];
      check_.add_contribution(k, ss[j], message_name(header(kDirectPhaseReduce, r_, c), k),
                              opt_.signer ? std::span<const uint8_t>(held_[c][k]) : std::span<const uint8_t>());
    }
  }
  if (non_finite)
    fail("chunk ", c, " of segment ", r_, ": the sum of the contributions overflowed fp32 (finite inputs whose sum "
         "is not); the round is abandoned");
  for (std::vector<uint8_t>& m : held_[c]) MessageBuffers::process().give(std::move(m));
  std::vector<std::vector<uint8_t>>().swap(held_[c]);
  add_times(0.0, seconds_since(t));
  const RingClock::time_point e = RingClock::now();
  std::vector<uint8_t> avg = new_ring_message(h);
  codec_->encode(x, h.count, avg.data() + kRingHeaderBytes, "the average");
  if (codec_->lossy()) codec_->decode(avg.data() + kRingHeaderBytes, h.count, x);
  if (h.is_signed) sign_ring_message(avg, *opt_.signer);
  add_times(seconds_since(e), 0.0);
  keep_chunk(r_, c, avg.data() + kRingHeaderBytes);
  // One copy per peer but the last, which takes the buffer: each link seals
  // its frame in place, under its own key.
  size_t last = N_;
  for (size_t j = 0; j < N_; ++j)
    if (j != r_) last = j;
  for (size_t j = 0; j < N_; ++j)
    if (j != r_ && j != last) {
      std::vector<uint8_t> copy = MessageBuffers::process().take(avg.size());
      std::memcpy(copy.data(), avg.data(), avg.size());
      queues_[j].put(average_seq(j, c), std::move(copy));
    }
  queues_[last].put(average_seq(last, c), std::move(avg));
}

// A peer's average of its segment: checked, decoded into place, kept.
void DirectRun::take_average(Job& job) {
  const std::string what = message_name(job.h, job.from);
  const uint8_t* payload = job.msg.data() + kRingHeaderBytes;
  const RingClock::time_point t = RingClock::now();
  codec_->validate(payload, job.h.count, what.c_str());
  double ss = 0.0;
  codec_->decode_fused(payload, job.h.count, nullptr, out_.data() + chunk_off(job.from, job.h.chunk),
                       check_.enabled() ? &ss : nullptr);
  add_times(0.0, seconds_since(t));
  if (check_.enabled()) {
    std::lock_guard<std::mutex> lock(check_mu_);
    check_.add_average(job.from, ss, what, opt_.signer ? std::span<const uint8_t>(job.msg) : std::span<const uint8_t>());
  }
  keep_chunk(job.from, job.h.chunk, payload);
  MessageBuffers::process().give(std::move(job.msg));
}

void DirectRun::run_job(Job& job) {
  switch (job.kind) {
    case JobKind::SendOwn: return send_own(job);
    case JobKind::Contribution: return take_contribution(job);
    case JobKind::Average: return take_average(job);
  }
}

// The first failure wins; every link is aborted (unblocking the other
// threads and telling the peers) and what is queued is dropped.
void DirectRun::fail_round(std::exception_ptr e) {
  failure_.record(e);
  for (size_t j = 0; j < N_; ++j)
    if (j != r_) {
      peers_[j]->abort();
      queues_[j].stop();
    }
}

void DirectRun::run() {
  const int workers = std::max(1, opt_.codec_threads);
  // A few messages per worker in flight from each peer (ring_allreduce.cpp).
  CodecPool<Job> pool(workers, 2 * static_cast<size_t>(workers) + 2 * N_, [this](Job& j) { run_job(j); },
                      [this](std::exception_ptr e) { fail_round(e); });
  pool_ = &pool;
  std::vector<std::thread> senders, receivers;
  // The same leaf message opens every link (encoded and signed once).
  const std::vector<uint8_t> leaves = audit_ ? own_leaf_message(opt_, S_) : std::vector<uint8_t>();
  for (size_t j = 0; j < N_; ++j) {
    if (j == r_) continue;
    senders.emplace_back([this, j] {
      try {
        send_queued(queues_[j], *peers_[j], peer_stats_[j], [&] { return op_deadline(); });
      } catch (const std::exception& e) {
        fail_round(std::make_exception_ptr(Error(str("sending to rank ", j, ": ", e.what()))));
      }
    });
    if (audit_) queues_[j].put(0, leaves);
    queues_[j].close(leaf_count() + n_chunks(j) + n_chunks(r_));
    receivers.emplace_back([this, j] {
      try {
        receive_from(j);
      } catch (const std::exception&) {
        fail_round(std::current_exception());
        pool_->stop();
      }
    });
  }
  // Our contribution, chunk by chunk, to each owner in turn: every link
  // starts at once.
  size_t most = 0;
  for (size_t s = 0; s < N_; ++s)
    if (s != r_) most = std::max(most, n_chunks(s));
  bool go = true;
  for (size_t c = 0; go && c < most; ++c)
    for (size_t d = 1; go && d < N_; ++d) {
      const size_t s = (r_ + d) % N_;
      if (c < n_chunks(s)) go = pool.submit(Job{JobKind::SendOwn, s, header(kDirectPhaseReduce, s, c), {}});
    }
  for (std::thread& t : receivers) t.join();
  pool.wait_idle();
  for (std::thread& t : senders) t.join();
  pool_ = nullptr;
}

}  // namespace

RingStats direct_allreduce_average(std::span<RingLink* const> peers, const RingOptions& opt,
                                   std::span<const float> input, std::span<float> output,
                                   const LeafCommitment* committed, std::vector<RingCarried>* carried) {
  const auto t0 = RingClock::now();
  const std::string ctx = str("direct all-reduce round ", opt.round, " (rank ", opt.rank, " of ", opt.world, ")");
  auto refuse = [&](const auto&... why) {
    for (RingLink* l : peers)
      if (l) l->abort();
    fail(ctx, ": ", why..., ". The round is abandoned and the input is untouched");
  };
  if (const std::string why = round_argument_error(opt, input, output, carried != nullptr); !why.empty()) refuse(why);
  if (peers.size() != static_cast<size_t>(opt.world)) refuse(peers.size(), " peer links for a world of ", opt.world);
  for (size_t j = 0; j < peers.size(); ++j)
    if ((peers[j] == nullptr) != (j == static_cast<size_t>(opt.rank)))
      refuse("the link with rank ", j, j == static_cast<size_t>(opt.rank) ? " (this rank) must be null" : " is missing");
  // In place, our segment's chunks are read (committed or encoded) before
  // the job that sums them writes them, and the others' chunks of the
  // input are read only by their SendOwn jobs, which the averages written
  // there cannot precede: an owner averages a chunk only after our
  // contribution to it arrived. Without a commitment the sum's own
  // encoding is made in the same job, before the write.
  if (carried) carried->clear();
  if (opt.world == 1) {
    if (const std::string why = average_alone(input, output); !why.empty()) refuse(why);
    RingStats stats;
    stats.seconds = std::chrono::duration<double>(RingClock::now() - t0).count();
    return stats;
  }
  DirectRun run(peers, opt, input, output, committed, carried);
  run.run();
  if (std::string msg; run.failure().failed(msg)) {
    if (carried) carried->clear();
    const size_t who = static_cast<size_t>(run.failure().offender());
    throw_lane_failure(ctx, run.failure(), opt, run.failure().offender(),
                       who < opt.member_keys.size() ? &opt.member_keys[who] : nullptr, true);
  }
  RingStats stats = run.stats();
  stats.seconds = std::chrono::duration<double>(RingClock::now() - t0).count();
  return stats;
}

}  // namespace intellect
