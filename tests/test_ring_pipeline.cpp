// The ring all-reduce with its codec work spread over several threads per
// lane (RingOptions::codec_threads): the same bytes as one thread, on every
// rank, at every piece count; failures still end every rank promptly.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "dist/contribution_check.h"
#include "dist/ring_allreduce.h"
#include "dist/ring_pipeline.h"
#include "mem_ring.h"
#include "util/error.h"
#include "util/rng.h"

namespace intellect {
namespace {

using namespace std::chrono_literals;
using memring::Ring;

std::vector<float> values(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const double k = uniform01(seed + 1000, i) < 1e-3 ? 20.0 : 1.0;
    v[i] = static_cast<float>(1e-3 * k * normal01(seed, i));
  }
  return v;
}

using memring::RingRun;
using memring::run_ring;

std::vector<std::vector<float>> inputs(int n, size_t size, uint64_t seed) {
  std::vector<std::vector<float>> v;
  for (int r = 0; r < n; ++r) v.push_back(values(size, seed + 17 * r));
  return v;
}

RingOptions opts(Compression c, size_t chunk, int threads) {
  RingOptions o;
  o.round = 21;
  o.compression = c;
  o.chunk_elems = chunk;
  o.int8_block = c == Compression::Int4 ? 64 : 256;
  o.codec_threads = threads;
  o.message_timeout = 5s;
  return o;
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Several threads, many pieces per step, odd sizes (segments and chunks of
// unequal lengths, chunks shorter than a codec block, segments of 0 or 1
// values): every rank ends with the bytes the one-thread ring gives, and
// carries the same encodings.
TEST(RingPipeline, SameBytesAsOneThreadAtEveryPieceCount) {
  for (Compression c : {Compression::Int8, Compression::Int4, Compression::None})
    for (int n : {2, 3, 4, 5})
      for (size_t size : {size_t{30'011}, size_t{997}, size_t{3}})
        for (size_t chunk : {size_t{1}, size_t{97}, size_t{1000}, size_t{1} << 20}) {
          if (chunk == 1 && size > 1000) continue;  // 30K one-value messages per rank: slow, adds nothing
          SCOPED_TRACE(str(compression_name(c), " N=", n, " size ", size, " chunk ", chunk));
          const auto in = inputs(n, size, 500 + n + size);
          Ring one(n);
          const RingRun want = run_ring(one, in, opts(c, chunk, 1));
          for (int r = 0; r < n; ++r) ASSERT_EQ(want.errors[r], "");
          for (int threads : {2, 3, 8}) {
            Ring ring(n);
            const RingRun got = run_ring(ring, in, opts(c, chunk, threads));
            for (int r = 0; r < n; ++r) {
              ASSERT_EQ(got.errors[r], "") << threads << " threads, rank " << r;
              ASSERT_TRUE(same_bytes(got.out[r], want.out[0])) << threads << " threads, rank " << r;
              ASSERT_EQ(got.carried[r].size(), want.carried[r].size());
              for (size_t k = 0; k < got.carried[r].size(); ++k) {
                EXPECT_EQ(got.carried[r][k].offset, want.carried[r][k].offset);
                EXPECT_EQ(got.carried[r][k].encoded, want.carried[r][k].encoded) << "piece " << k;
              }
              EXPECT_EQ(ring.links[r]->bytes.load(), one.links[r]->bytes.load()) << "rank " << r;
            }
          }
        }
}

// The contribution check runs on the codec threads too: honest rings pass,
// and an inflated contribution is still named by its successor.
TEST(RingPipeline, ContributionCheckOnCodecThreads) {
  const int n = 4;
  auto in = inputs(n, 20'003, 90);
  RingOptions o = opts(Compression::Int8, 500, 4);
  for (const auto& v : in) o.announced_norms.push_back(announce_contribution(v, 1).norm);
  {
    Ring ring(n);
    const RingRun res = run_ring(ring, in, o);
    for (int r = 0; r < n; ++r) EXPECT_EQ(res.errors[r], "") << "rank " << r;
  }
  for (float& v : in[2]) v *= 50.0f;
  Ring ring(n);
  const RingRun res = run_ring(ring, in, o);
  EXPECT_NE(res.errors[3].find("rank 2 sent more than it announced"), std::string::npos) << res.errors[3];
  for (int r = 0; r < n; ++r) EXPECT_NE(res.errors[r], "") << "rank " << r << " finished";
}

// A peer that dies mid-round (after some of its messages, in either phase)
// fails its successor and itself promptly, long before the message timeout,
// and leaves the inputs untouched; a rank that had received everything
// before the abort reached it keeps the full round's result. So does a
// message that fails its payload check on a codec thread.
TEST(RingPipeline, PeerDyingMidRoundFailsEveryRankPromptly) {
  const int n = 4;
  const size_t size = 40'000, chunk = 300;  // 34 messages per step, 6 steps
  const auto in = inputs(n, size, 700);
  const auto copy = in;
  Ring healthy(n);
  const RingRun full = run_ring(healthy, in, opts(Compression::Int8, chunk, 1));
  for (int die_after : {0, 5, 40, 120, 190})
    for (int threads : {1, 4}) {
      SCOPED_TRACE(str("dies after ", die_after, " sends, ", threads, " codec threads"));
      Ring ring(n);
      ring.links[1]->die_after = die_after;
      const RingRun res = run_ring(ring, in, opts(Compression::Int8, chunk, threads));
      EXPECT_NE(res.errors[1].find("link died"), std::string::npos) << res.errors[1];
      EXPECT_NE(res.errors[2], "") << "the dead rank's successor finished";
      for (int r = 0; r < n; ++r) {
        if (res.errors[r].empty()) {
          EXPECT_TRUE(same_bytes(res.out[r], full.out[0])) << "rank " << r;
        }
        // Still in the reduce-scatter: nobody can have the average.
        if (die_after < 100) {
          EXPECT_NE(res.errors[r], "") << "rank " << r << " finished";
        }
      }
      EXPECT_LT(res.seconds, 2.0);  // the message timeout is 5 s: aborts propagated
      EXPECT_EQ(in, copy);
    }
  // A non-finite table in rank 0's 30th message: rank 1's codec thread refuses it.
  Ring ring(n);
  std::atomic<int> k{0};
  ring.links[0]->corrupt = [&](std::vector<uint8_t>& m) {
    if (k++ != 30) return;
    const float nan = NAN;
    std::memcpy(m.data() + kRingHeaderBytes + 8, &nan, 4);
  };
  const RingRun res = run_ring(ring, inputs(n, size, 701), opts(Compression::Int8, chunk, 4));
  EXPECT_NE(res.errors[1].find("non-finite"), std::string::npos) << res.errors[1];
  for (int r = 0; r < n; ++r) EXPECT_NE(res.errors[r], "") << "rank " << r << " finished";
  EXPECT_LT(res.seconds, 2.0);
}

TEST(RingPipeline, BadThreadCountRefused) {
  Ring ring(2);
  std::vector<float> in(10, 1.0f), out(10);
  RingOptions o = opts(Compression::Int8, 4, 0);
  o.world = 2;
  EXPECT_THROW(ring_allreduce_average(*ring.links[0], o, in, out), Error);
}

// The sender takes messages strictly in sequence, however they were put.
TEST(RingPipeline, OrderedSendQueueKeepsTheSchedule) {
  OrderedSendQueue q;
  std::thread producer([&] {
    for (uint64_t s : {3u, 1u, 0u, 4u, 2u}) q.put(s, std::vector<uint8_t>{static_cast<uint8_t>(s)});
    q.close(5);
  });
  std::vector<uint8_t> got, m;
  while (q.pop(m)) got.push_back(m[0]);
  producer.join();
  EXPECT_EQ(got, (std::vector<uint8_t>{0, 1, 2, 3, 4}));
  OrderedSendQueue stopped;
  stopped.put(0, {1});
  stopped.stop();
  EXPECT_FALSE(stopped.pop(m));
}

// A failing job stops the pool: later submits are refused, and the error
// is reported once per failing job.
TEST(RingPipeline, CodecPoolStopsAtTheFirstFailure) {
  for (int threads : {1, 3}) {
    std::atomic<int> ran{0}, errors{0};
    CodecPool<int> pool(
        threads, 4,
        [&](int& j) {
          if (j == 5) fail("job 5 fails");
          ++ran;
        },
        [&](std::exception_ptr) { ++errors; });
    bool refused = false;
    for (int j = 0; j < 1000 && !refused; ++j) {
      refused = !pool.submit(j);
      if (j == 5) pool.wait_idle();  // the failure has been handled before the next submit
    }
    pool.wait_idle();
    EXPECT_TRUE(refused) << threads;
    EXPECT_EQ(errors.load(), 1) << threads;
    EXPECT_LE(ran.load(), 5) << threads;
  }
}

}  // namespace
}  // namespace intellect
