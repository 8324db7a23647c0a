#include "dist/sparse_allgather.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "dist/bytes.h"
#include "dist/contribution_check.h"
#include "dist/ring_queue.h"
#include "dist/sparse.h"
#include "util/error.h"

namespace intellect {

namespace {
constexpr uint32_t kMagic = 0x47415349;  // "ISAG" in memory order
constexpr uint8_t kVersion = 1;
constexpr size_t kStepOffset = 28;  // of the u32 step field (after magic..world), patched when forwarding

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

}  // namespace

std::vector<uint8_t> encode_sparse_header(const SparseHeader& h) {
  ByteWriter w(kSparseHeaderBytes);
  w.u32(kMagic);
  w.u8(kVersion);
  w.u8(0);
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
  w.u32(0);
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
  if (r.u8("reserved") != 0 || r.u16("reserved") != 0) fail(what, ": reserved header bytes are not zero");
  SparseHeader h;
  h.round = r.u64("round");
  h.total_elems = r.u64("total_elems");
  h.world = r.u32("world");
  h.step = r.u32("step");
  h.source = r.u32("source");
  h.chunk = r.u32("chunk");
  h.count = r.u32("count");
  h.block = r.u32("block");
  h.k = r.u32("k");
  if (r.u32("reserved") != 0) fail(what, ": reserved header bytes are not zero");
  sparse_check_params(h.block, h.k, what.c_str());
  const size_t want = sparse_encoded_bytes(h.count, h.block, h.k);
  if (r.remaining() != want)
    fail(what, ": payload of ", r.remaining(), " bytes, but ", h.count, " values keeping ", h.k, " per ", h.block,
         " take ", want, " bytes (truncated or corrupt message)");
  return h;
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

RingStats sparse_allgather_average(RingLink& link, const SparseRingOptions& opt, std::span<const float> input,
                                   std::span<const float> residual, std::span<float> output, SparseSent* sent,
                                   std::vector<RingCarried>* carried) {
  const auto t0 = RingClock::now();
  const std::string ctx = str("sparse all-gather round ", opt.round, " (rank ", opt.rank, " of ", opt.world, ")");
  auto refuse = [&](const auto&... why) {
    link.abort();
    fail(ctx, ": ", why..., ". The round is abandoned and the input is untouched");
  };
  if (opt.world < 1 || opt.rank < 0 || opt.rank >= opt.world) refuse("rank must be in [0, world) and world ≥ 1");
  if (opt.block < 1 || opt.block > kSparseMaxBlock || opt.k < 1 || opt.k > opt.block)
    refuse("block must be in [1, ", kSparseMaxBlock, "] and k in [1, block]");
  if (opt.chunk_blocks == 0 || opt.chunk_blocks * opt.block > UINT32_MAX) refuse("chunk_blocks out of range");
  if (input.size() != output.size()) refuse("input has ", input.size(), " values but output ", output.size());
  if (!residual.empty() && residual.size() != input.size())
    refuse("the residual has ", residual.size(), " values, the input ", input.size());
  // In place is allowed: the input is read once, encoded before anything is
  // received, and the output written only after every contribution arrived.
  const float *in_lo = input.data(), *in_hi = in_lo + input.size();
  if (!input.empty() && input.data() != output.data() && output.data() < in_hi && in_lo < output.data() + output.size())
    refuse("output overlaps part of the input; pass the same buffer (in place) or a separate one");
  const size_t S = input.size(), N = static_cast<size_t>(opt.world), r = static_cast<size_t>(opt.rank);
  const size_t chunk = opt.chunk_blocks * opt.block;
  const size_t n_chunks = (S + chunk - 1) / chunk;
  if (n_chunks > UINT32_MAX) refuse("too many chunks; raise chunk_blocks");

  RingStats stats;
  if (carried) carried->clear();
  auto since = [](RingClock::time_point t) { return std::chrono::duration<double>(RingClock::now() - t).count(); };
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
    stats.encode_s += since(t);
  }
  auto chunk_at = [&](size_t c) { return sparse_encoded_bytes(c * chunk, opt.block, opt.k); };  // block-aligned
  auto chunk_len = [&](size_t c) { return std::min(chunk, S - c * chunk); };
  auto op_deadline = [&] { return std::min(RingClock::now() + opt.message_timeout, opt.deadline); };
  auto header = [&](size_t step, size_t source, size_t c) {
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
    return h;
  };

  SendQueue queue;
  FirstError first_error;
  SourceNormCheck check(opt.announced_norms, opt.rank, opt.world, opt.norm_slack);
  int offender = -1;
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
    for (size_t c = 0; c < n_chunks && N > 1; ++c) {
      std::vector<uint8_t> msg = encode_sparse_header(header(0, r, c));
      const size_t bytes = sparse_encoded_bytes(chunk_len(c), opt.block, opt.k);
      const uint8_t* p = all.data() + r * one + chunk_at(c);
      msg.insert(msg.end(), p, p + bytes);
      queue.push(std::move(msg));
    }
    // Step t brings rank r − t − 1's contribution; it goes on while t + 2 < N.
    for (size_t t = 0; t + 1 < N; ++t) {
      const size_t source = (r + N - t - 1) % N;
      for (size_t c = 0; c < n_chunks; ++c) {
        const SparseHeader want = header(t, source, c);
        const std::string what = str("sparse all-gather message (step ", t, ", contribution of rank ", source,
                                     ", chunk ", c, ") from the previous rank");
        RingClock::time_point tw = RingClock::now();
        std::vector<uint8_t> msg = link.recv_from_prev(op_deadline());
        stats.recv_wait_s += since(tw);
        const RingClock::time_point d = RingClock::now();
        stats.bytes_received += msg.size();
        stats.messages_received += 1;
        expect_sparse_header(parse_sparse_header(msg, what), want, what);
        const uint8_t* payload = msg.data() + kSparseHeaderBytes;
        sparse_validate(payload, want.count, opt.block, opt.k, what.c_str());
        if (check.enabled()) {
          double ss = 0.0;
          sparse_for_each(payload, want.count, opt.block, opt.k, [&](size_t, float v) { ss += double(v) * double(v); });
          check.add(source, ss, what);  // before it is kept or forwarded
        }
        std::memcpy(all.data() + source * one + chunk_at(c), payload, msg.size() - kSparseHeaderBytes);
        stats.decode_s += since(d);
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
    link.abort();
    queue.stop();
  }
  if (sender.joinable()) sender.join();
  if (std::string msg; first_error.get(msg)) {
    if (offender >= 0)
      throw ContributionExceedsAnnouncement(str(ctx, " failed: ", msg, ". The round is abandoned"), offender);
    fail(ctx, " failed: ", msg, ". The round is abandoned and the input is untouched; retry with a new ring");
  }

  const RingClock::time_point d = RingClock::now();
  average_chunks(all, N, S, opt, output, carried);
  stats.decode_s += since(d);
  if (sent) {
    sent->offset = 0;
    sent->count = S;
    sent->block = opt.block;
    sent->k = opt.k;
    sent->encoded.assign(all.begin() + static_cast<std::ptrdiff_t>(r * one),
                         all.begin() + static_cast<std::ptrdiff_t>((r + 1) * one));
  }
  stats.seconds = since(t0);
  return stats;
}

}  // namespace intellect
