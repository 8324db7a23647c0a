#include "dist/ring_allreduce.h"

#include "dist/contribution_check.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "dist/bytes.h"
#include "dist/ring_queue.h"
#include "util/error.h"

namespace intellect {

static_assert(std::endian::native == std::endian::little, "fp32 payloads are memcpy'd: little-endian hosts only");

namespace {

constexpr uint32_t kMagic = 0x52415249;  // "IRAR" in memory order
constexpr uint8_t kVersion = 1;
constexpr uint8_t kReduceScatter = 0, kAllGather = 1;
constexpr size_t kStepOffset = 28;  // of the u32 step field (after magic..world), patched when forwarding

size_t payload_bytes(Compression c, size_t count, size_t block) { return codec_encoded_bytes(c, count, block); }

}  // namespace

std::vector<uint8_t> encode_ring_header(const RingHeader& h) {
  ByteWriter w(kRingHeaderBytes);
  w.u32(kMagic);
  w.u8(kVersion);
  w.u8(h.phase);
  w.u8(static_cast<uint8_t>(h.compression));
  w.u8(0);
  w.u64(h.round);
  w.u64(h.total_elems);
  w.u32(h.world);
  w.u32(h.step);
  w.u32(h.segment);
  w.u32(h.chunk);
  w.u32(h.count);
  w.u32(h.int8_block);
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
  if (h.phase > kAllGather) fail(what, ": phase ", int(h.phase), " is neither reduce-scatter (0) nor all-gather (1)");
  const uint8_t c = r.u8("compression");
  if (c > static_cast<uint8_t>(Compression::Int4))
    fail(what, ": compression ", int(c), " is none of fp32 (0), int8 (1) or int4 (2)",
         c == static_cast<uint8_t>(Compression::Sparse) ? " (sparse travels in all-gather messages)" : "");
  h.compression = static_cast<Compression>(c);
  if (r.u8("reserved") != 0) fail(what, ": reserved header byte is not zero");
  h.round = r.u64("round");
  h.total_elems = r.u64("total_elems");
  h.world = r.u32("world");
  h.step = r.u32("step");
  h.segment = r.u32("segment");
  h.chunk = r.u32("chunk");
  h.count = r.u32("count");
  h.int8_block = r.u32("int8_block");
  if ((h.compression != Compression::None) != (h.int8_block != 0))
    fail(what, ": int8_block is ", h.int8_block, " with compression ", compression_name(h.compression),
         " (must be > 0 exactly when quantized)");
  const size_t want = payload_bytes(h.compression, h.count, h.int8_block);
  if (r.remaining() != want)
    fail(what, ": payload of ", r.remaining(), " bytes, but ", h.count, " values with compression ",
         compression_name(h.compression), " take ", want, " bytes (truncated or corrupt message)");
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
  const char* order = "messages out of order: the peers disagree on the ring layout or chunk size";
  check("phase", got.phase, want.phase, order);
  check("step", got.step, want.step, order);
  check("segment", got.segment, want.segment, order);
  check("chunk", got.chunk, want.chunk, order);
  check("count", got.count, want.count, order);
}

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
  if (opt.world < 1 || opt.rank < 0 || opt.rank >= opt.world) refuse("rank must be in [0, world) and world ≥ 1");
  if (opt.chunk_elems == 0 || opt.chunk_elems > UINT32_MAX) refuse("chunk_elems must be in [1, 2^32)");
  if (opt.compression == Compression::Sparse)
    refuse("sparse compression is not a ring all-reduce: use sparse_allgather_average");
  if (opt.compression != Compression::None && (opt.int8_block == 0 || opt.int8_block > UINT32_MAX))
    refuse("int8_block (the codec's block) must be in [1, 2^32)");
  if (input.size() != output.size()) refuse("input has ", input.size(), " values but output ", output.size());
  const float *in_lo = input.data(), *in_hi = in_lo + input.size();
  if (!input.empty() && output.data() < in_hi && in_lo < output.data() + output.size())
    refuse("output overlaps input; the input must survive a failed round, so pass a separate buffer");
  const size_t S = input.size();
  const auto N = static_cast<size_t>(opt.world), r = static_cast<size_t>(opt.rank);
  if ((S + opt.chunk_elems - 1) / opt.chunk_elems > UINT32_MAX) refuse("too many chunks; raise chunk_elems");

  // Refuse our own NaN/inf before anyone averages it, in either mode.
  for (size_t i = 0; i < S; ++i)
    if (!std::isfinite(input[i]))
      refuse("input value ", i, " is ", input[i],
             "; a pseudo-gradient with NaN/inf must not be averaged (the inner steps diverged)");

  RingStats stats;
  if (carried) carried->clear();
  std::copy(input.begin(), input.end(), output.begin());
  if (N == 1) {
    stats.seconds = std::chrono::duration<double>(RingClock::now() - t0).count();
    return stats;
  }

  const std::unique_ptr<BlockCodec> codec = make_block_codec(opt.compression, opt.int8_block, opt.codec_threads);
  const bool lossy = codec->lossy();
  const size_t block = codec->block();
  auto seg_begin = [&](size_t s) { return S * s / N; };
  auto seg_len = [&](size_t s) { return S * (s + 1) / N - S * s / N; };
  auto n_chunks = [&](size_t s) { return (seg_len(s) + opt.chunk_elems - 1) / opt.chunk_elems; };
  auto wrap = [&](int64_t s) { return static_cast<size_t>(((s % int64_t(N)) + int64_t(N)) % int64_t(N)); };
  auto op_deadline = [&] { return std::min(RingClock::now() + opt.message_timeout, opt.deadline); };
  auto header = [&](uint8_t phase, size_t step, size_t seg, size_t chunk, size_t count) {
    RingHeader h;
    h.phase = phase;
    h.compression = opt.compression;
    h.round = opt.round;
    h.total_elems = S;
    h.world = static_cast<uint32_t>(N);
    h.step = static_cast<uint32_t>(step);
    h.segment = static_cast<uint32_t>(seg);
    h.chunk = static_cast<uint32_t>(chunk);
    h.count = static_cast<uint32_t>(count);
    h.int8_block = static_cast<uint32_t>(block);
    return h;
  };
  // Header + payload for `count` values at x: their encoding.
  auto since = [](RingClock::time_point t) { return std::chrono::duration<double>(RingClock::now() - t).count(); };
  auto build = [&](const RingHeader& h, const float* x) {
    const RingClock::time_point t = RingClock::now();
    std::vector<uint8_t> msg = encode_ring_header(h);
    msg.resize(kRingHeaderBytes + codec->encoded_bytes(h.count));
    codec->encode(x, h.count, msg.data() + kRingHeaderBytes, "the partial sum");
    stats.encode_s += since(t);
    return msg;
  };

  // The carried encodings, one slot per chunk in offset order.
  std::vector<size_t> first_chunk_of(N + 1, 0);
  for (size_t s = 0; s < N; ++s) first_chunk_of[s + 1] = first_chunk_of[s] + n_chunks(s);
  const bool keep = carried != nullptr && lossy;
  if (keep) carried->resize(first_chunk_of[N]);
  auto keep_chunk = [&](size_t seg, size_t c, size_t off, size_t len, const uint8_t* payload) {
    if (!keep) return;
    RingCarried& k = (*carried)[first_chunk_of[seg] + c];
    k.compression = opt.compression;
    k.offset = off;
    k.count = len;
    k.block = block;
    k.encoded.assign(payload, payload + codec->encoded_bytes(len));
  };

  ContributionCheck check(opt.announced_norms, opt.rank, opt.world, opt.norm_slack);
  int offender = -1;  // the predecessor's rank, when it broke its announcement
  SendQueue queue;
  FirstError first_error;
  std::thread sender([&] {
    try {
      std::vector<uint8_t> msg;
      while (queue.pop(msg)) {
        const RingClock::time_point t = RingClock::now();
        link.send_to_next(msg, op_deadline());
        stats.send_s += since(t);
        stats.bytes_sent += msg.size();
        stats.messages_sent += 1;
      }
    } catch (const std::exception& e) {
      first_error.record(str("sending to the next rank: ", e.what()));
      link.abort();  // unblocks the receiving thread
    }
  });

  try {
    // Receives the message the schedule says comes next and checks it.
    auto receive = [&](const RingHeader& want) {
      const std::string what =
          str(want.phase == kReduceScatter ? "reduce-scatter" : "all-gather", " message (step ", want.step,
              ", segment ", want.segment, ", chunk ", want.chunk, ") from the previous rank");
      const RingClock::time_point t = RingClock::now();
      std::vector<uint8_t> msg = link.recv_from_prev(op_deadline());
      stats.recv_wait_s += since(t);
      const RingClock::time_point d = RingClock::now();
      stats.bytes_received += msg.size();
      stats.messages_received += 1;
      expect_ring_header(parse_ring_header(msg, what), want, what);
      codec->validate(msg.data() + kRingHeaderBytes, want.count, what.c_str());
      if (check.enabled())
        check.add(want.phase == kAllGather, want.step, codec->sum_squares(msg.data() + kRingHeaderBytes, want.count),
                  what);
      stats.decode_s += since(d);
      return msg;
    };

    // Reduce-scatter, step 0: our own segment r, straight from the input copy.
    for (size_t c = 0; c < n_chunks(r); ++c) {
      const size_t off = seg_begin(r) + c * opt.chunk_elems;
      const size_t len = std::min(opt.chunk_elems, seg_begin(r) + seg_len(r) - off);
      queue.push(build(header(kReduceScatter, 0, r, c, len), output.data() + off));
    }
    // Reduce-scatter, steps 0..N−2 received; each accumulated chunk goes on at once.
    for (size_t t = 0; t + 1 < N; ++t) {
      const size_t g = wrap(int64_t(r) - int64_t(t) - 1);
      for (size_t c = 0; c < n_chunks(g); ++c) {
        const size_t off = seg_begin(g) + c * opt.chunk_elems;
        const size_t len = std::min(opt.chunk_elems, seg_begin(g) + seg_len(g) - off);
        float* acc = output.data() + off;
        const std::vector<uint8_t> msg = receive(header(kReduceScatter, t, g, c, len));
        const uint8_t* payload = msg.data() + kRingHeaderBytes;
        const RingClock::time_point d = RingClock::now();
        codec->decode_add(payload, len, acc);
        stats.decode_s += since(d);
        if (t + 2 < N) {
          queue.push(build(header(kReduceScatter, t + 1, g, c, len), acc));
          continue;
        }
        // g = r + 1: we own this chunk's full sum. Average, quantize once,
        // and keep the decoded values ourselves so every rank agrees bit for bit.
        for (size_t i = 0; i < len; ++i) acc[i] /= static_cast<float>(N);
        std::vector<uint8_t> out = build(header(kAllGather, 0, g, c, len), acc);
        if (lossy) codec->decode(out.data() + kRingHeaderBytes, len, acc);
        keep_chunk(g, c, off, len, out.data() + kRingHeaderBytes);
        queue.push(std::move(out));
      }
    }
    // All-gather: take each owner's bytes and pass them on unchanged.
    for (size_t t = 0; t + 1 < N; ++t) {
      const size_t g = wrap(int64_t(r) - int64_t(t));
      for (size_t c = 0; c < n_chunks(g); ++c) {
        const size_t off = seg_begin(g) + c * opt.chunk_elems;
        const size_t len = std::min(opt.chunk_elems, seg_begin(g) + seg_len(g) - off);
        std::vector<uint8_t> msg = receive(header(kAllGather, t, g, c, len));
        const uint8_t* payload = msg.data() + kRingHeaderBytes;
        const RingClock::time_point d = RingClock::now();
        codec->decode(payload, len, output.data() + off);
        stats.decode_s += since(d);
        keep_chunk(g, c, off, len, payload);
        if (t + 2 < N) {
          const uint32_t next_step = static_cast<uint32_t>(t + 1);
          std::memcpy(msg.data() + kStepOffset, &next_step, 4);
          queue.push(std::move(msg));
        }
      }
    }
    queue.close();
  } catch (const ContributionExceedsAnnouncement& e) {
    offender = e.offender_rank;
    first_error.record(e.what());
    link.abort();
    queue.stop();
  } catch (const std::exception& e) {
    first_error.record(e.what());
    link.abort();  // unblocks the sender, and tells the neighbours
    queue.stop();
  }
  sender.join();
  if (std::string msg; first_error.get(msg)) {
    if (carried) carried->clear();
    if (offender >= 0)
      throw ContributionExceedsAnnouncement(str(ctx, " failed: ", msg, ". The round is abandoned"), offender);
    fail(ctx, " failed: ", msg, ". The round is abandoned and the input is untouched; retry with a new ring");
  }
  stats.seconds = std::chrono::duration<double>(RingClock::now() - t0).count();
  return stats;
}

}  // namespace intellect
