// The mesh's math: the int8 codec, the ring all-reduce over in-memory links
// (one thread per rank), its failure semantics and message validation, and
// DiLoCo's outer Nesterov step.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/contribution_check.h"
#include "dist/diloco.h"
#include "dist/quantize.h"
#include "dist/ring_allreduce.h"
#include "mem_ring.h"
#include "test_util.h"
#include "dist/round_codec.h"
#include "util/error.h"
#include "util/rng.h"

namespace intellect {
namespace {

using namespace std::chrono_literals;

// Pseudo-gradient-like data: N(0, σ) with 0.1% outliers twenty times larger.
std::vector<float> pseudo_grad(size_t n, uint64_t seed, double sigma = 1e-3) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const double k = uniform01(seed + 1000, i) < 1e-3 ? 20.0 : 1.0;
    v[i] = static_cast<float>(sigma * k * normal01(seed, i));
  }
  return v;
}

double rms(const std::vector<float>& a) {
  double s = 0;
  for (float x : a) s += double(x) * x;
  return std::sqrt(s / std::max<size_t>(a.size(), 1));
}

double rms_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s / std::max<size_t>(a.size(), 1));
}

// --- int8 codec ------------------------------------------------------------

std::vector<float> round_trip(const std::vector<float>& x, size_t block) {
  std::vector<uint8_t> enc(int8_encoded_bytes(x.size(), block));
  int8_encode(x.data(), x.size(), block, enc.data());
  int8_validate(enc.data(), x.size(), block, "test");
  std::vector<float> y(x.size());
  int8_decode(enc.data(), x.size(), block, y.data());
  return y;
}

TEST(DistQuant, RoundTripWithinOneBinWidth) {
  const size_t block = 1000;
  const auto x = pseudo_grad(10'007, 1);  // last block short
  const auto y = round_trip(x, block);
  for (size_t b = 0; b * block < x.size(); ++b) {
    const size_t lo = b * block, hi = std::min(x.size(), lo + block);
    const float mn = *std::min_element(x.begin() + lo, x.begin() + hi);
    const float mx = *std::max_element(x.begin() + lo, x.begin() + hi);
    const double width = (double(mx) - mn) / 255.0;
    for (size_t i = lo; i < hi; ++i) ASSERT_LE(std::fabs(double(y[i]) - x[i]), width * 1.0001) << i;
  }
}

TEST(DistQuant, GaussianErrorIsSmall) {
  auto x = std::vector<float>(1 << 16);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(normal01(3, i));
  const auto y = round_trip(x, 1 << 16);
  std::vector<double> xd(x.begin(), x.end());
  // Bins of (max − min)/255 ≈ 8.5σ/255 give an RMS error ≈ width/√12 ≈ 1% of σ.
  EXPECT_LT(rms_diff(y, xd) / rms(x), 0.012);
}

TEST(DistQuant, BinMeansEqualOriginalMeans) {
  const size_t n = 5000;
  const auto x = pseudo_grad(n, 2);
  std::vector<uint8_t> enc(int8_block_bytes(n));
  int8_encode_block(x.data(), n, enc.data());
  const uint8_t* codes = enc.data() + kInt8TableBytes;
  std::vector<double> sum_x(256, 0.0), sum_y(256, 0.0);
  std::vector<int> cnt(256, 0);
  std::vector<float> y(n);
  int8_decode(enc.data(), n, n, y.data());
  for (size_t i = 0; i < n; ++i) {
    sum_x[codes[i]] += x[i];
    sum_y[codes[i]] += y[i];
    cnt[codes[i]]++;
  }
  int used = 0;
  for (int b = 0; b < 256; ++b) {
    if (!cnt[b]) continue;
    ++used;
    const double mx = sum_x[b] / cnt[b], my = sum_y[b] / cnt[b];
    EXPECT_NEAR(my, mx, 1e-6 * std::fabs(mx) + 1e-12) << "bin " << b;
  }
  EXPECT_GT(used, 50);
}

TEST(DistQuant, ConstantTinyAndEmptyBlocks) {
  for (size_t n : {size_t{1}, size_t{2}, size_t{7}, size_t{300}}) {
    const std::vector<float> c(n, -0.3125f);
    EXPECT_EQ(round_trip(c, 64), c) << n;
  }
  const std::vector<float> two = {1.0f, -2.0f};
  EXPECT_EQ(round_trip(two, 64), two);  // each value alone in its bin: exact
  EXPECT_TRUE(round_trip({}, 64).empty());
  EXPECT_EQ(int8_encoded_bytes(0, 64), 0u);
  // Extreme ranges: the whole float line, and a range of a few denormals.
  const std::vector<float> wide = {-3e38f, 3e38f, 0.0f};
  const auto w = round_trip(wide, 64);
  EXPECT_EQ(w[0], wide[0]);
  EXPECT_EQ(w[1], wide[1]);
  const std::vector<float> denorm = {1e-45f, 3e-45f, 1e-45f};
  EXPECT_EQ(round_trip(denorm, 64), denorm);
}

TEST(DistQuant, DeterministicAcrossThreadCounts) {
  const auto x = pseudo_grad(50'000, 4);
  std::vector<uint8_t> a(int8_encoded_bytes(x.size(), 4096)), b(a.size());
  omp_set_num_threads(1);
  int8_encode(x.data(), x.size(), 4096, a.data());
  omp_set_num_threads(2);
  int8_encode(x.data(), x.size(), 4096, b.data());
  EXPECT_EQ(a, b);
}

TEST(DistQuant, NonFiniteRefused) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    auto x = pseudo_grad(3000, 5);
    x[2500] = bad;
    std::vector<uint8_t> enc(int8_encoded_bytes(x.size(), 1000));
    try {
      int8_encode(x.data(), x.size(), 1000, enc.data(), "the pseudo-gradient");
      FAIL() << "non-finite value accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("starting at element 2000"), std::string::npos) << m;
      EXPECT_NE(m.find("value 500"), std::string::npos) << m;
      EXPECT_NE(m.find("must not be averaged"), std::string::npos) << m;
    }
  }
  // A table with a NaN (from a peer) is caught by validation.
  const auto x = pseudo_grad(100, 6);
  std::vector<uint8_t> enc(int8_encoded_bytes(100, 100));
  int8_encode(x.data(), 100, 100, enc.data());
  const float nan = NAN;
  std::memcpy(enc.data() + 4 * 17, &nan, 4);
  EXPECT_THROW(int8_validate(enc.data(), 100, 100, "peer"), Error);
}

// --- in-memory links ---------------------------------------------------------

using memring::Channel;
using memring::MemLink;
using memring::Ring;

using memring::RingRun;
using memring::run_ring;

std::vector<std::vector<float>> make_inputs(int n, size_t size, uint64_t seed) {
  std::vector<std::vector<float>> v;
  for (int r = 0; r < n; ++r) v.push_back(pseudo_grad(size, seed + 17 * r));
  return v;
}

std::vector<double> exact_average(const std::vector<std::vector<float>>& in) {
  std::vector<double> a(in[0].size(), 0.0);
  for (auto& v : in)
    for (size_t i = 0; i < a.size(); ++i) a[i] += v[i];
  for (auto& x : a) x /= in.size();
  return a;
}

RingOptions small_opts(Compression c) {
  RingOptions o;
  o.round = 11;
  o.compression = c;
  o.chunk_elems = 1000;
  o.int8_block = 256;
  o.message_timeout = 5s;
  return o;
}

TEST(DistRing, Fp32MatchesExactAverage) {
  for (int n : {1, 2, 3, 5}) {
    for (size_t size : {size_t{10'007}, size_t{3}, size_t{0}, size_t{5}}) {
      Ring ring(n);
      const auto in = make_inputs(n, size, 100 + n);
      const auto copy = in;
      const auto res = run_ring(ring, in, small_opts(Compression::None));
      const auto want = exact_average(in);
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(res.errors[r], "") << "n=" << n << " size=" << size;
        EXPECT_EQ(res.out[r], res.out[0]) << "ranks disagree, n=" << n;
        for (size_t i = 0; i < size; ++i)
          ASSERT_NEAR(res.out[r][i], want[i], 1e-6 * (std::fabs(want[i]) + 1e-3) * n) << i;
      }
      EXPECT_EQ(in, copy);  // inputs untouched
    }
  }
}

TEST(DistRing, OneRankIsIdentity) {
  Ring ring(1);
  const auto in = make_inputs(1, 777, 9);
  for (Compression c : {Compression::None, Compression::Int8}) {
    const auto res = run_ring(ring, in, small_opts(c));
    ASSERT_EQ(res.errors[0], "");
    EXPECT_EQ(res.out[0], in[0]);
  }
}

TEST(DistRing, Int8BitIdenticalAndAccurate) {
  for (int n : {2, 3, 5}) {
    for (size_t size : {size_t{20'011}, size_t{4}, size_t{1}}) {
      Ring ring(n);
      const auto in = make_inputs(n, size, 200 + n);
      const auto copy = in;
      const auto res = run_ring(ring, in, small_opts(Compression::Int8));
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(res.errors[r], "") << "n=" << n << " size=" << size;
        ASSERT_EQ(0, std::memcmp(res.out[r].data(), res.out[0].data(), size * 4)) << "rank " << r << " differs";
      }
      EXPECT_EQ(in, copy);
      if (size > 1000) {
        const auto want = exact_average(in);
        std::vector<float> wf(want.begin(), want.end());
        // Outliers make the bins coarse (see the report): a loose but real bound.
        EXPECT_LT(rms_diff(res.out[0], want) / rms(wf), 0.2) << "n=" << n;
      }
    }
  }
}

// The error table for the report (printed; the bound above is the check).
// What a donor serves a late node or a joiner: the all-gather's int8 bytes,
// which must decode to every rank's output bit for bit at a quarter the size.
TEST(DistRing, CarriedInt8DecodesToTheOutputBitForBit) {
  for (int n : {2, 3, 5}) {
    for (size_t size : {size_t{10'007}, size_t{999}, size_t{4}}) {
      Ring ring(n);
      const auto in = make_inputs(n, size, 300 + n);
      const auto res = run_ring(ring, in, small_opts(Compression::Int8));
      const auto& carried = res.carried;
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(res.errors[r], "") << "n=" << n;
        size_t at = 0;
        RoundEncoder enc(size);
        for (const RingCarried& c : carried[r]) {
          ASSERT_EQ(c.offset, at) << "chunks must come in offset order";
          at += c.count;
          enc.add_int8(c.count, c.block, c.encoded);
        }
        ASSERT_EQ(at, size);
        const ByteBuffer blob = enc.finish();
        if (size > 5000) {
          EXPECT_LT(blob.size(), size * sizeof(float) * 0.3 + 100 * 1024) << "not a quarter";
        }
        std::vector<float> got(size, -1.0f);
        decode_round(blob, got, "test round");
        ASSERT_EQ(0, std::memcmp(got.data(), res.out[r].data(), size * sizeof(float))) << "n=" << n << " rank " << r;
      }
    }
  }
  // fp32 rounds carry nothing: the caller sends the output as fp32.
  Ring ring(3);
  const auto res = run_ring(ring, make_inputs(3, 100, 9), small_opts(Compression::None));
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(res.carried[r].empty());
}

// A donor's ring writes the round it carries straight into place
// (PlannedRound, laid out by ring_chunk_counts): the same bytes as the round
// assembled from the carried chunks, with int8 and int4, audited or not.
TEST(DistRing, APlannedRoundHoldsTheBytesTheCarriedChunksMake) {
  for (Compression c : {Compression::Int8, Compression::Int4}) {
    for (int n : {2, 3, 5}) {
      for (size_t size : {size_t{10'007}, size_t{999}, size_t{4}}) {
        RingOptions base = small_opts(c);
        if (c == Compression::Int4) base.int8_block = default_codec_block(Compression::Int4);
        const auto in = make_inputs(n, size, 400 + n);
        Ring assembled_ring(n);
        const auto assembled = run_ring(assembled_ring, in, base);
        Ring planned_ring(n);
        std::vector<ByteBuffer> planned(n);
        const auto res = memring::run_ranks(n, size, [&](int r, std::vector<float>& out, auto&) {
          RingOptions o = base;
          o.rank = r;
          o.world = n;
          std::vector<PlannedRound::Piece> pieces;
          for (size_t count : ring_chunk_counts(o, size)) pieces.push_back({c, count, o.int8_block});
          PlannedRound round(size, pieces);
          o.carried_into = &round;
          ring_allreduce_average(*planned_ring.links[r], o, in[r], out);
          planned[r] = round.finish();
        });
        for (int r = 0; r < n; ++r) {
          ASSERT_EQ(res.errors[r], "") << "n=" << n << " size=" << size;
          ASSERT_EQ(assembled.errors[r], "");
          RoundEncoder enc(size);
          for (const RingCarried& k : assembled.carried[r]) enc.add_carried(k);
          const ByteBuffer want = enc.finish();
          EXPECT_TRUE(want == planned[r]) << compression_name(c) << " n=" << n << " size=" << size << " rank " << r;
          ASSERT_EQ(0, std::memcmp(res.out[r].data(), assembled.out[r].data(), size * sizeof(float)));
        }
      }
    }
  }
  // A plan cut otherwise than the lane is refused before anything is sent.
  Ring ring(2);
  const auto in = make_inputs(2, 5000, 7);
  const auto res = memring::run_ranks(2, 5000, [&](int r, std::vector<float>& out, auto&) {
    RingOptions o = small_opts(Compression::Int8);
    o.rank = r;
    o.world = 2;
    const std::vector<PlannedRound::Piece> one{{Compression::Int8, 5000, o.int8_block}};
    PlannedRound round(5000, one);
    o.carried_into = &round;
    ring_allreduce_average(*ring.links[r], o, in[r], out);
  });
  for (int r = 0; r < 2; ++r) EXPECT_NE(res.errors[r].find("does not match the lane's cut"), std::string::npos) << res.errors[r];
}

TEST(DistRound, Fp32AndMixedPiecesRoundTrip) {
  const std::vector<float> v = pseudo_grad(3000, 5);
  std::vector<float> got(v.size());
  decode_round(encode_round_fp32(v), got, "fp32 round");
  EXPECT_EQ(got, v);
  // An int8 piece between two fp32 pieces.
  std::vector<uint8_t> enc(int8_encoded_bytes(1000, 128));
  int8_encode(v.data() + 1000, 1000, 128, enc.data());
  std::vector<float> mid(1000);
  int8_decode(enc.data(), 1000, 128, mid.data());
  RoundEncoder e(v.size());
  e.add_fp32(std::span<const float>(v).subspan(0, 1000));
  e.add_int8(1000, 128, enc);
  e.add_fp32(std::span<const float>(v).subspan(2000));
  std::fill(got.begin(), got.end(), 0.0f);
  decode_round(e.finish(), got, "mixed round");
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + 1000, v.begin()));
  EXPECT_TRUE(std::equal(got.begin() + 1000, got.begin() + 2000, mid.begin()));
  EXPECT_TRUE(std::equal(got.begin() + 2000, got.end(), v.begin() + 2000));
  std::vector<float> empty;
  decode_round(encode_round_fp32(empty), empty, "empty round");
}

TEST(DistRound, EncoderRefusesPiecesThatDoNotFit) {
  const std::vector<float> v(10, 1.0f);
  RoundEncoder e(8);
  EXPECT_THROW(e.add_fp32(v), Error);
  e.add_fp32(std::span<const float>(v).subspan(0, 4));
  EXPECT_THROW(e.finish(), Error);  // 4 of 8 covered
  std::vector<uint8_t> enc(int8_encoded_bytes(4, 2));
  EXPECT_THROW(e.add_int8(4, 2, std::span<const uint8_t>(enc).subspan(1)), Error);
  EXPECT_THROW(e.add_int8(4, 0, enc), Error);
}

TEST(DistRound, DecoderRefusesEveryMalformedBlob) {
  const std::vector<float> v = pseudo_grad(600, 7);
  std::vector<uint8_t> enc(int8_encoded_bytes(500, 256));
  int8_encode(v.data(), 500, 256, enc.data());
  RoundEncoder e(v.size());
  e.add_int8(500, 256, enc);
  e.add_fp32(std::span<const float>(v).subspan(500));
  const ByteBuffer good_round = e.finish();
  const std::vector<uint8_t> good(good_round.begin(), good_round.end());
  std::vector<float> out(v.size());
  decode_round(good, out, "good");
  // Every truncation fails, as does a trailing byte.
  for (size_t n = 0; n < good.size(); n += (n < 64 ? 1 : 97))
    EXPECT_THROW(decode_round(std::span<const uint8_t>(good).subspan(0, n), out, "cut"), Error) << n;
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_THROW(decode_round(longer, out, "long"), Error);
  // The wrong model size.
  std::vector<float> other(v.size() + 1);
  EXPECT_THROW(decode_round(good, other, "other model"), Error);
  auto patched = [&](size_t at, uint8_t b) {
    std::vector<uint8_t> x = good;
    x[at] = b;
    return x;
  };
  constexpr size_t kHeader = 24, kPiece = 16;
  EXPECT_THROW(decode_round(patched(0, 'X'), out, "magic"), Error);
  EXPECT_THROW(decode_round(patched(4, 9), out, "version"), Error);
  EXPECT_THROW(decode_round(patched(5, 1), out, "reserved"), Error);
  EXPECT_THROW(decode_round(patched(kHeader, 7), out, "kind"), Error);
  EXPECT_THROW(decode_round(patched(kHeader + 1, 1), out, "piece reserved"), Error);
  EXPECT_THROW(decode_round(patched(kHeader + 5, 0), out, "block 0"), Error);  // 256 = bytes 00 01 00 00
  EXPECT_THROW(decode_round(patched(kHeader + 15, 0x40), out, "huge count"), Error);
  // A NaN in the int8 table and in the fp32 piece.
  std::vector<uint8_t> nan_table = good;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan_table.data() + kHeader + kPiece + 4 * 3, &nan, 4);
  EXPECT_THROW(decode_round(nan_table, out, "nan table"), Error);
  std::vector<uint8_t> nan_value = good;
  std::memcpy(nan_value.data() + nan_value.size() - 4, &nan, 4);
  EXPECT_THROW(decode_round(nan_value, out, "nan value"), Error);
}

TEST(DistRing, Int8ErrorTable) {
  const size_t size = 1 << 17;
  for (int n : {2, 3, 4, 8}) {
    for (bool outliers : {false, true}) {
      std::vector<std::vector<float>> in;
      for (int r = 0; r < n; ++r) {
        std::vector<float> v(size);
        for (size_t i = 0; i < size; ++i) {
          const double k = outliers && uniform01(500 + r, i) < 1e-3 ? 20.0 : 1.0;
          v[i] = static_cast<float>(1e-3 * k * normal01(300 + r, i));
        }
        in.push_back(std::move(v));
      }
      Ring ring(n);
      RingOptions o = small_opts(Compression::Int8);
      o.chunk_elems = 1 << 15;
      o.int8_block = 1 << 16;
      const auto res = run_ring(ring, in, o);
      ASSERT_EQ(res.errors[0], "");
      const auto want = exact_average(in);
      std::vector<float> wf(want.begin(), want.end());
      std::printf("int8 ring N=%d %-9s relative RMS error of the average: %.4f\n", n,
                  outliers ? "outliers" : "gaussian", rms_diff(res.out[0], want) / rms(wf));
    }
  }
}

void expect_all_fail(const RingRun& res, double within_s, const char* what) {
  for (size_t r = 0; r < res.errors.size(); ++r) {
    EXPECT_NE(res.errors[r], "") << what << ": rank " << r << " did not fail";
    EXPECT_NE(res.errors[r].find("input is untouched"), std::string::npos) << res.errors[r];
  }
  EXPECT_LT(res.seconds, within_s) << what;
}

TEST(DistRing, DeadLinkFailsEveryRankPromptly) {
  for (Compression c : {Compression::None, Compression::Int8}) {
    Ring ring(5);
    ring.links[2]->die_after = 7;
    const auto in = make_inputs(5, 20'000, 7);
    const auto copy = in;
    const auto res = run_ring(ring, in, small_opts(c));
    expect_all_fail(res, 2.0, "dead link");  // far under the 5 s message timeout: aborts propagate
    EXPECT_NE(res.errors[2].find("link died"), std::string::npos) << res.errors[2];
    EXPECT_EQ(in, copy);
  }
}

TEST(DistRing, StalledPeerTimesOut) {
  Ring ring(3);
  ring.links[1]->stall_after = 3;
  const auto in = make_inputs(3, 9'000, 8);
  RingOptions o = small_opts(Compression::Int8);
  o.message_timeout = 300ms;
  const auto res = run_ring(ring, in, o);
  expect_all_fail(res, 3.0, "stalled peer");
  // Whoever times out first aborts, and the others may see that abort first.
  EXPECT_TRUE(std::any_of(res.errors.begin(), res.errors.end(),
                          [](const std::string& e) { return e.find("timed out") != std::string::npos; }));
}

TEST(DistRing, RoundDeadlineBoundsTheRound) {
  Ring ring(2);
  ring.links[0]->stall_after = 0;
  const auto in = make_inputs(2, 5'000, 9);
  RingOptions o = small_opts(Compression::None);
  o.message_timeout = 60s;
  o.deadline = RingClock::now() + 200ms;
  const auto res = run_ring(ring, in, o);
  expect_all_fail(res, 2.0, "round deadline");
}

TEST(DistRing, RetryAfterFailureSucceeds) {
  const auto in = make_inputs(3, 6'000, 10);
  {
    Ring ring(3);
    ring.links[0]->die_after = 2;
    expect_all_fail(run_ring(ring, in, small_opts(Compression::Int8)), 2.0, "first attempt");
  }
  Ring ring(3);
  RingOptions o = small_opts(Compression::Int8);
  o.round = 12;
  const auto res = run_ring(ring, in, o);
  for (auto& e : res.errors) EXPECT_EQ(e, "");
}

// Each corruption of rank 0's outgoing messages must be caught by rank 1.
TEST(DistRing, MalformedMessagesRejected) {
  struct Case {
    const char* name;
    std::function<void(std::vector<uint8_t>&)> f;
    const char* expect;
  };
  auto put32 = [](std::vector<uint8_t>& m, size_t off, uint32_t v) { std::memcpy(m.data() + off, &v, 4); };
  const std::vector<Case> cases = {
      {"magic", [&](auto& m) { m[0] ^= 1; }, "bad magic"},
      {"version", [&](auto& m) { m[4] = 9; }, "version"},
      {"phase", [&](auto& m) { m[5] = 7; }, "phase"},
      {"compression", [&](auto& m) { m[6] = 5; }, "compression"},
      {"round", [&](auto& m) { m[8] ^= 1; }, "round is"},
      {"total", [&](auto& m) { m[16] ^= 1; }, "parameter counts"},
      {"segment", [&](auto& m) { put32(m, 32, 99); }, "segment is 99"},
      {"chunk", [&](auto& m) { put32(m, 36, 1234); }, "chunk is 1234"},
      {"count", [&](auto& m) { put32(m, 40, 0xffffffffu); }, "payload of"},
      {"truncated", [&](auto& m) { m.resize(m.size() - 1); }, "payload of"},
      {"short header", [&](auto& m) { m.resize(20); }, "truncated"},
      {"nan table", [&](auto& m) { const float x = NAN; std::memcpy(m.data() + kRingHeaderBytes + 8, &x, 4); },
       "non-finite"},
  };
  const auto in = make_inputs(3, 3'000, 11);
  for (const auto& c : cases) {
    Ring ring(3);
    ring.links[0]->corrupt = c.f;
    const auto res = run_ring(ring, in, small_opts(Compression::Int8));
    expect_all_fail(res, 2.0, c.name);
    EXPECT_NE(res.errors[1].find(c.expect), std::string::npos) << c.name << ": " << res.errors[1];
  }
  // fp32 payloads are checked for NaN too.
  Ring ring(2);
  ring.links[0]->corrupt = [](auto& m) { const float x = NAN; std::memcpy(m.data() + kRingHeaderBytes, &x, 4); };
  const auto res = run_ring(ring, make_inputs(2, 100, 12), small_opts(Compression::None));
  EXPECT_NE(res.errors[1].find("not finite"), std::string::npos) << res.errors[1];
}

TEST(DistRing, HeaderRoundTripAndChecks) {
  RingHeader h;
  h.phase = 1;
  h.compression = Compression::Int8;
  h.round = 0x0102030405060708ull;
  h.total_elems = 1ull << 40;
  h.world = 8;
  h.step = 3;
  h.segment = 5;
  h.chunk = 6;
  h.count = 10;
  h.int8_block = 4;
  auto m = encode_ring_header(h);
  ASSERT_EQ(m.size(), kRingHeaderBytes);
  m.resize(kRingHeaderBytes + int8_encoded_bytes(10, 4));
  const RingHeader g = parse_ring_header(m, "test");
  EXPECT_NO_THROW(expect_ring_header(g, h, "test"));
  RingHeader other = h;
  other.step = 4;
  EXPECT_THROW(expect_ring_header(g, other, "test"), Error);
  m[7] = 1;  // reserved
  EXPECT_THROW(parse_ring_header(m, "test"), Error);
  EXPECT_EQ(parse_compression("int8"), Compression::Int8);
  EXPECT_EQ(parse_compression("none"), Compression::None);
  EXPECT_THROW(parse_compression("fp8"), Error);
}

TEST(DistRing, NonFiniteInputAndBadArgumentsRefused) {
  Ring ring(2);
  auto in = make_inputs(2, 100, 13);
  in[1][42] = NAN;
  const auto res = run_ring(ring, in, small_opts(Compression::None));
  EXPECT_NE(res.errors[1].find("input value 42"), std::string::npos) << res.errors[1];
  EXPECT_NE(res.errors[0], "");  // its neighbour gave up, so must it, and promptly
  EXPECT_LT(res.seconds, 2.0);
  // Every codec refuses it with the same words, whether the value is in a
  // chunk this rank adds to (42: segment 0, the fused decode pass) or in its
  // own segment (77: checked before its step-0 encoding).
  for (Compression c : {Compression::None, Compression::Int8, Compression::Int4})
    for (size_t i : {size_t{42}, size_t{77}, size_t{99}})
      for (float bad : {NAN, INFINITY}) {
        Ring r2(2);
        auto in2 = make_inputs(2, 100, 13);
        in2[1][i] = bad;
        const auto res2 = run_ring(r2, in2, small_opts(c));
        const std::string want = str("input value ", i, " is ", bad,
                                     "; a pseudo-gradient with NaN/inf must not be averaged (the inner steps "
                                     "diverged; retrying will not help)");
        EXPECT_NE(res2.errors[1].find(want), std::string::npos) << compression_name(c) << ": " << res2.errors[1];
        EXPECT_NE(res2.errors[0], "");
      }
  // Output overlapping part of the input is refused (in place, the very
  // same span, is allowed: Mesh's three-node averages run one node so).
  std::vector<float> buf(10);
  RingOptions o = small_opts(Compression::None);
  const std::string e = test::error_of([&] {
    ring_allreduce_average(*ring.links[0], o, std::span<const float>(buf).first(8), std::span<float>(buf).last(8));
  });
  EXPECT_NE(e.find("output overlaps part of the input"), std::string::npos) << e;
}

// --- DiLoCo outer step --------------------------------------------------------

TEST(DistDiloco, NesterovMatchesHandComputedSequence) {
  // lr = 0.5, μ = 0.5: every intermediate is a short binary fraction, so the
  // expected values are exact in float.
  OuterOptimizer opt(2, 0.5, 0.5, true);
  const float p0[2] = {1.0f, -2.0f};
  opt.init(p0);
  const float g1[2] = {1.0f, 0.5f}, g2[2] = {-1.0f, 0.25f};
  float out[2];
  // step 1: v = g = (1, .5); update = g + μv = (1.5, .75); p = (1 − .75, −2 − .375)
  opt.step(g1, out);
  EXPECT_EQ(out[0], 0.25f);
  EXPECT_EQ(out[1], -2.375f);
  EXPECT_EQ(opt.momentum()[0], 1.0f);
  // step 2: v = .5·(1, .5) + (−1, .25) = (−.5, .5); update = g + μv = (−1.25, .5);
  // p = (.25 + .625, −2.375 − .25)
  opt.step(g2, out);
  EXPECT_EQ(out[0], 0.875f);
  EXPECT_EQ(out[1], -2.625f);
  EXPECT_EQ(opt.momentum()[0], -0.5f);
  EXPECT_EQ(opt.momentum()[1], 0.5f);
  EXPECT_EQ(opt.steps_taken(), 2);

  // Without Nesterov the update is v itself.
  OuterOptimizer plain(2, 0.5, 0.5, false);
  plain.init(p0);
  plain.step(g1, out);
  EXPECT_EQ(out[0], 0.5f);     // 1 − .5·1
  EXPECT_EQ(out[1], -2.25f);   // −2 − .5·.5
  plain.step(g2, out);
  EXPECT_EQ(out[0], 0.75f);    // .5 − .5·(−.5)
  EXPECT_EQ(out[1], -2.5f);    // −2.25 − .5·.5
}

TEST(DistDiloco, IntellectSettingsMatchDoubleReference) {
  // lr 0.7, Nesterov 0.9 (INTELLECT-1) over five steps against a double reference.
  const size_t n = 1000;
  OuterOptimizer opt(n, 0.7, 0.9, true);
  std::vector<float> p = pseudo_grad(n, 20, 1.0);
  opt.init(p.data());
  std::vector<double> rp(p.begin(), p.end()), rv(n, 0.0);
  std::vector<float> out(n);
  for (int s = 0; s < 5; ++s) {
    const auto g = pseudo_grad(n, 30 + s);
    opt.step(g.data(), out.data());
    for (size_t i = 0; i < n; ++i) {
      rv[i] = 0.9 * rv[i] + g[i];
      rp[i] -= 0.7 * (g[i] + 0.9 * rv[i]);
    }
  }
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], rp[i], 1e-5 * (std::fabs(rp[i]) + 1.0)) << i;
}

TEST(DistDiloco, PseudoGradientHashAndRefusal) {
  OuterOptimizer opt(3, 0.7, 0.9, true);
  const float p[3] = {1.0f, 2.0f, 3.0f}, cur[3] = {0.5f, 2.0f, 4.0f};
  EXPECT_THROW(opt.pseudo_gradient(cur), Error);  // before init
  opt.init(p);
  EXPECT_EQ(opt.pseudo_gradient(cur), (std::vector<float>{0.5f, 0.0f, -1.0f}));
  const uint64_t h0 = opt.params_hash();
  OuterOptimizer twin(3, 0.7, 0.9, true);
  twin.init(p);
  EXPECT_EQ(twin.params_hash(), h0);
  const float bad[3] = {0.0f, NAN, 0.0f};
  EXPECT_THROW(opt.step(bad, nullptr), Error);
  EXPECT_EQ(opt.params_hash(), h0);  // unchanged by the refused step
  const float g[3] = {0.0f, 0.0f, 1e-3f};
  opt.step(g, nullptr);
  EXPECT_NE(opt.params_hash(), h0);
  EXPECT_THROW(OuterOptimizer(3, 0.7, 0.0, true), Error);
  EXPECT_THROW(OuterOptimizer(3, -1.0, 0.9, true), Error);
}

// The overlapped boundary's fused passes give the bits of the separate
// calls they replace (predict or outer − δ, apply; subtract, predict), with
// the aliasing the boundary uses (start over δ_prev; δ over start, the next
// start over the weights), eager and delayed, Nesterov and plain, at a size
// that runs on every core.
TEST(DistDiloco, FusedBoundaryPassesEqualTheSeparateCalls) {
  const size_t n = (1 << 17) + 3;
  for (const bool nesterov : {true, false}) {
    for (const bool predicted : {true, false}) {
      SCOPED_TRACE(std::string(nesterov ? "nesterov" : "plain") + (predicted ? ", eager" : ", delayed"));
      OuterOptimizer a(n, 0.7, 0.9, nesterov), b(n, 0.7, 0.9, nesterov);
      const std::vector<float> p0 = pseudo_grad(n, 41, 1.0), g0 = pseudo_grad(n, 42);
      a.init(p0.data());
      b.init(p0.data());
      a.step(g0.data(), nullptr);  // some momentum
      b.step(g0.data(), nullptr);
      const std::vector<float> avg = pseudo_grad(n, 43), delta_prev = pseudo_grad(n, 44);
      const std::vector<float> weights = pseudo_grad(n, 45, 1.0);
      // Separate: s_k = start(δ_prev); apply(avg); δ_k = s_k − e; s_{k+1} = start(δ_k).
      auto start = [&](const OuterOptimizer& o, const std::vector<float>& d) {
        std::vector<float> out(n);
        if (predicted) o.predict(d.data(), out.data());
        else for (size_t i = 0; i < n; ++i) out[i] = o.params()[i] - d[i];
        return out;
      };
      const std::vector<float> s_k = start(a, delta_prev);
      a.apply(avg.data(), nullptr);
      std::vector<float> delta(n);
      for (size_t i = 0; i < n; ++i) delta[i] = s_k[i] - weights[i];
      const std::vector<float> s_next = start(a, delta);
      // Fused, in the boundary's buffers.
      std::vector<float> pseudo = delta_prev, params = weights;
      b.apply_after_start(avg.data(), pseudo.data(), pseudo.data(), predicted);
      EXPECT_EQ(pseudo, s_k);
      EXPECT_EQ(b.params(), a.params());
      EXPECT_EQ(b.momentum(), a.momentum());
      EXPECT_EQ(b.steps_taken(), a.steps_taken());
      b.next_start(pseudo.data(), params.data(), pseudo.data(), params.data(), predicted);
      EXPECT_EQ(pseudo, delta);
      EXPECT_EQ(params, s_next);
    }
  }
  // The hash of more than one block covers every value: one bit anywhere changes it.
  OuterOptimizer h1(n * 40, 0.7, 0.9, true), h2(n * 40, 0.7, 0.9, true);
  std::vector<float> big(n * 40, 0.5f);
  h1.init(big.data());
  for (size_t at : {size_t{0}, size_t{4} << 20, big.size() - 1}) {
    big[at] = std::nextafter(0.5f, 1.0f);
    h2.init(big.data());
    EXPECT_NE(h2.params_hash(), h1.params_hash()) << at;
    big[at] = 0.5f;
  }
  h2.init(big.data());
  EXPECT_EQ(h2.params_hash(), h1.params_hash());
  // apply writing the new parameters in its own pass equals them, even over g.
  OuterOptimizer c(n, 0.7, 0.9, true);
  const std::vector<float> p0 = pseudo_grad(n, 46, 1.0);
  c.init(p0.data());
  std::vector<float> g = pseudo_grad(n, 47);
  c.apply(g.data(), g.data());
  EXPECT_EQ(g, c.params());
}

// A rotation's outer step (StepMask): the moving blocks step exactly as an
// unmasked step would; the others keep parameters and momentum (Nesterov does
// not coast on a block nobody averaged), and new_params_out gets their
// parameters as they are. With momentum 0 and lr 1 (blocks4's and blocks2's
// default) the mask changes no bit against a step with zeros there.
TEST(DistDiloco, AMaskedOuterStepMovesOnlyItsBlocks) {
  const size_t block = 4096, n = 5 * block + 77;  // the last block shorter
  const std::vector<uint8_t> moves = {1, 0, 0, 1, 0, 1};
  const StepMask mask{moves, block};
  auto moved = [&](size_t i) { return moves[i / block] != 0; };
  const std::vector<float> p0 = pseudo_grad(n, 51, 1.0), g0 = pseudo_grad(n, 52), g = pseudo_grad(n, 53);
  std::vector<float> g_zeroed = g;
  for (size_t i = 0; i < n; ++i)
    if (!moved(i)) g_zeroed[i] = 0.0f;
  {
    SCOPED_TRACE("Nesterov, lr 0.7, momentum 0.9");
    OuterOptimizer full(n, 0.7, 0.9, true), masked(n, 0.7, 0.9, true);
    full.init(p0.data());
    masked.init(p0.data());
    full.step(g0.data(), nullptr);  // some momentum everywhere
    masked.step(g0.data(), nullptr);
    const std::vector<float> p1 = masked.params(), v1 = masked.momentum();
    std::vector<float> out_full(n), out_masked(n, -1.0f);
    full.apply(g.data(), out_full.data());
    masked.apply(g.data(), out_masked.data(), &mask);
    size_t differ = 0;
    for (size_t i = 0; i < n; ++i) {
      if (moved(i)) {
        ASSERT_EQ(masked.params()[i], full.params()[i]) << i;
        ASSERT_EQ(masked.momentum()[i], full.momentum()[i]) << i;
        ASSERT_EQ(out_masked[i], out_full[i]) << i;
      } else {
        ASSERT_EQ(masked.params()[i], p1[i]) << i;
        ASSERT_EQ(masked.momentum()[i], v1[i]) << i;
        ASSERT_EQ(out_masked[i], p1[i]) << i;
        differ += full.params()[i] != p1[i];  // unmasked, momentum moved them
      }
    }
    EXPECT_GT(differ, n / 4);
    EXPECT_EQ(masked.steps_taken(), 2);

    // The fused boundary pass with the same mask: every value's start from the
    // state before, the step on the moving blocks alone.
    OuterOptimizer fused(n, 0.7, 0.9, true), apart(n, 0.7, 0.9, true);
    fused.init(p0.data());
    apart.init(p0.data());
    fused.step(g0.data(), nullptr);
    apart.step(g0.data(), nullptr);
    const std::vector<float> delta_prev = pseudo_grad(n, 54);
    std::vector<float> start_apart(n);
    for (size_t i = 0; i < n; ++i) start_apart[i] = apart.params()[i] - delta_prev[i];
    apart.apply(g.data(), nullptr, &mask);
    std::vector<float> start_fused = delta_prev;
    fused.apply_after_start(g.data(), start_fused.data(), start_fused.data(), false, 1.0f, nullptr, &mask);
    EXPECT_EQ(start_fused, start_apart);
    EXPECT_EQ(fused.params(), apart.params());
    EXPECT_EQ(fused.momentum(), apart.momentum());
  }
  {
    SCOPED_TRACE("plain averaging: lr 1, momentum 0");
    OuterOptimizer zeroed(n, 1.0, 0.0, false), masked(n, 1.0, 0.0, false);
    zeroed.init(p0.data());
    masked.init(p0.data());
    zeroed.apply(g_zeroed.data(), nullptr);
    masked.apply(g.data(), nullptr, &mask);
    EXPECT_EQ(masked.params(), zeroed.params());
    EXPECT_EQ(masked.momentum(), zeroed.momentum());
  }
  {
    SCOPED_TRACE("a mask that does not fit the vector");
    OuterOptimizer o(n, 0.7, 0.9, true);
    o.init(p0.data());
    const std::vector<uint8_t> short_moves(5, 1);
    const StepMask wrong{short_moves, block};
    EXPECT_THROW(o.apply(g.data(), nullptr, &wrong), Error);
  }
}

// The fitted eager stand-in: start(scale·δ) is the step scale·δ would give
// (scale 1: the step itself, bit for bit); the fit in the fused pass
// changes none of its results, equals ⟨g, δ⟩ / ⟨δ, δ⟩ (clamped to [0, 1];
// 1 for δ = 0), and gives the same bits with 1 thread or many.
TEST(DistDiloco, FittedStandinScalesTheOwnStepAndFitsTheAverage) {
  const size_t n = (1 << 18) + 5;
  const std::vector<float> p0 = pseudo_grad(n, 51, 1.0), g0 = pseudo_grad(n, 52);
  const std::vector<float> delta = pseudo_grad(n, 53);
  // avg = 0.3·δ + noise: the least-squares scale is near 0.3.
  std::vector<float> noise = pseudo_grad(n, 54), avg(n);
  for (size_t i = 0; i < n; ++i) avg[i] = 0.3f * delta[i] + 0.1f * noise[i];
  auto fresh = [&] {
    OuterOptimizer o(n, 0.7, 0.9, true);
    o.init(p0.data());
    o.step(g0.data(), nullptr);
    return o;
  };
  OuterOptimizer a = fresh();
  std::vector<float> scaled(n), via_predict(n), scaled_delta(n);
  for (size_t i = 0; i < n; ++i) scaled_delta[i] = 0.25f * delta[i];
  a.start(delta.data(), scaled.data(), true, 0.25f);
  a.predict(scaled_delta.data(), via_predict.data());
  EXPECT_EQ(scaled, via_predict);
  std::vector<float> one(n), own(n);
  a.start(delta.data(), one.data(), true, 1.0f);
  a.predict(delta.data(), own.data());
  EXPECT_EQ(one, own);
  // Delayed ignores the scale: outer − δ.
  a.start(delta.data(), scaled.data(), false, 0.25f);
  for (size_t i = 0; i < n; i += 9973) EXPECT_EQ(scaled[i], a.params()[i] - delta[i]);

  double dot = 0, sq = 0;
  for (size_t i = 0; i < n; ++i) {
    dot += double(delta[i]) * avg[i];
    sq += double(delta[i]) * delta[i];
  }
  std::vector<std::vector<float>> starts;
  std::vector<OuterOptimizer::StandinFit> fits;
  for (const int threads : {1, 4}) {
    omp_set_num_threads(threads);
    OuterOptimizer plain = fresh(), fitted = fresh();
    std::vector<float> s_plain = delta, s_fitted = delta;
    plain.apply_after_start(avg.data(), s_plain.data(), s_plain.data(), true, 0.5f);
    OuterOptimizer::StandinFit fit;
    fitted.apply_after_start(avg.data(), s_fitted.data(), s_fitted.data(), true, 0.5f, &fit);
    EXPECT_EQ(s_fitted, s_plain) << threads << " thread(s)";
    EXPECT_EQ(fitted.params(), plain.params());
    EXPECT_EQ(fitted.momentum(), plain.momentum());
    EXPECT_NEAR(fit.dot / dot, 1.0, 1e-9);
    EXPECT_NEAR(fit.own_sq / sq, 1.0, 1e-9);
    EXPECT_NEAR(fit.scale(), dot / sq, 1e-6);
    EXPECT_NEAR(fit.scale(), 0.3, 0.02);
    starts.push_back(s_fitted);
    fits.push_back(fit);
  }
  omp_set_num_threads(omp_get_num_procs());
  EXPECT_EQ(starts[0], starts[1]);
  EXPECT_EQ(fits[0].dot, fits[1].dot) << "the fit does not depend on the thread count";
  EXPECT_EQ(fits[0].own_sq, fits[1].own_sq);
  // Clamped, and 1 when there is nothing to fit.
  EXPECT_EQ((OuterOptimizer::StandinFit{-1.0, 2.0}.scale()), 0.0f);
  EXPECT_EQ((OuterOptimizer::StandinFit{3.0, 2.0}.scale()), 1.0f);
  EXPECT_EQ((OuterOptimizer::StandinFit{0.0, 0.0}.scale()), 1.0f);
  // Alone, the average is the node's own δ: the fit is exactly 1.
  OuterOptimizer alone = fresh();
  std::vector<float> s = delta;
  OuterOptimizer::StandinFit fit;
  alone.apply_after_start(delta.data(), s.data(), s.data(), true, 1.0f, &fit);
  EXPECT_EQ(fit.scale(), 1.0f);
}

// The finite check over a model-sized buffer runs on every core; a lone bad
// value anywhere is still refused, named by its index, before any change.
TEST(DistDiloco, LargeStepRefusesOneNonFiniteValueAnywhere) {
  const size_t n = 1 << 20;
  OuterOptimizer opt(n, 0.7, 0.9, true);
  const std::vector<float> p(n, 1.0f);
  opt.init(p.data());
  const uint64_t h0 = opt.params_hash();
  std::vector<float> g(n, 1e-3f);
  for (size_t bad : {size_t{0}, size_t{777777}, n - 1}) {
    g[bad] = bad % 2 ? INFINITY : NAN;
    try {
      opt.step(g.data(), nullptr);
      ADD_FAILURE() << "stepped with a non-finite value at " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("value " + std::to_string(bad) + " is"), std::string::npos) << e.what();
    }
    EXPECT_EQ(opt.params_hash(), h0);
    g[bad] = 1e-3f;
  }
  opt.step(g.data(), nullptr);
  EXPECT_NE(opt.params_hash(), h0);
}

// A whole outer step on one node: the all-reduce is the identity, so the
// result is exactly the local outer step.
TEST(DistDiloco, OneNodeOuterStepThroughTheRing) {
  const size_t n = 5000;
  const auto start = pseudo_grad(n, 40, 1.0);
  auto current = start;
  for (size_t i = 0; i < n; ++i) current[i] -= 0.01f * static_cast<float>(normal01(41, i));
  OuterOptimizer a(n, 0.7, 0.9, true), b(n, 0.7, 0.9, true);
  a.init(start.data());
  b.init(start.data());
  const auto g = a.pseudo_gradient(current.data());
  std::vector<float> avg(n);
  Ring ring(1);
  RingOptions o = small_opts(Compression::Int8);
  ring_allreduce_average(*ring.links[0], o, g, avg);
  std::vector<float> pa(n), pb(n);
  a.step(avg.data(), pa.data());
  b.step(g.data(), pb.data());
  EXPECT_EQ(pa, pb);
  EXPECT_EQ(a.params_hash(), b.params_hash());
}

}  // namespace
}  // namespace intellect

// --- contributions checked against announced norms -----------------------------

namespace intellect {
namespace {

std::vector<double> norms_of(const std::vector<std::vector<float>>& in) {
  std::vector<double> n;
  for (const auto& v : in) n.push_back(announce_contribution(v, 2).norm);
  return n;
}

TEST(Contribution, HonestRingsPassTheirAnnouncedNorms) {
  for (Compression c : {Compression::None, Compression::Int8})
    for (int n : {2, 3, 5}) {
      SCOPED_TRACE(str(compression_name(c), " N=", n));
      const auto in = make_inputs(n, 5003, 40 + n);
      RingOptions o = small_opts(c);
      o.announced_norms = norms_of(in);
      Ring ring(n);
      const auto res = run_ring(ring, in, o);
      for (int r = 0; r < n; ++r) EXPECT_EQ(res.errors[r], "") << "rank " << r;
      for (int r = 1; r < n; ++r) EXPECT_EQ(res.out[r], res.out[0]);
    }
}

TEST(Contribution, ASenderAboveItsAnnouncementIsNamedByItsSuccessor) {
  for (Compression c : {Compression::None, Compression::Int8})
    for (int n : {2, 3, 5})
      for (double scale : {100.0, 3.0}) {
        SCOPED_TRACE(str(compression_name(c), " N=", n, " scale ", scale));
        auto in = make_inputs(n, 5003, 70 + n);
        RingOptions o = small_opts(c);
        o.announced_norms = norms_of(in);  // honest announcements...
        const int liar = n - 1;
        for (float& v : in[liar]) v = static_cast<float>(v * scale);  // ...but the liar sends more
        Ring ring(n);
        const auto res = run_ring(ring, in, o);
        // Its successor (rank 0) names it; nobody finishes with a poisoned average.
        EXPECT_NE(res.errors[0].find(str("rank ", liar, " sent more than it announced")), std::string::npos)
            << res.errors[0];
        for (int r = 0; r < n; ++r) EXPECT_NE(res.errors[r], "") << "rank " << r << " finished";
      }
}

TEST(Contribution, CheckBoundsFollowTheRing) {
  ContributionCheck check({1.0, 2.0, 4.0}, 0, 3, 1.0);
  ASSERT_TRUE(check.enabled());
  EXPECT_DOUBLE_EQ(check.bound(false, 0), 4.0);      // rank 0's predecessor is rank 2
  EXPECT_DOUBLE_EQ(check.bound(false, 1), 6.0);      // then ranks 2 and 1
  EXPECT_DOUBLE_EQ(check.bound(true, 0), 7.0 / 3);   // the average's bound
  check.add(false, 0, 9.0, "m");                      // 3 <= 4
  check.add(false, 0, 7.0, "m");                      // sqrt(16) = 4: still within
  EXPECT_THROW(check.add(false, 0, 0.5, "m"), ContributionExceedsAnnouncement);
  try {
    ContributionCheck c2({1.0, 1.0}, 1, 2, 1.0);
    c2.add(false, 0, 4.0, "m");
    ADD_FAILURE();
  } catch (const ContributionExceedsAnnouncement& e) {
    EXPECT_EQ(e.offender_rank, 0);
  }
  EXPECT_FALSE(ContributionCheck({1.0, -1.0}, 0, 2, 1.0).enabled());  // one did not announce: no checks
  EXPECT_FALSE(ContributionCheck({}, 0, 2, 1.0).enabled());
}

TEST(Contribution, AnnouncementIsExactAndIndependentOfThreads) {
  const auto x = pseudo_grad(100003, 5);
  double s = 0;
  for (float v : x) s += double(v) * v;
  const Announcement a1 = announce_contribution(x, 1), a4 = announce_contribution(x, 4);
  EXPECT_NEAR(a1.norm, std::sqrt(s), 1e-9 * std::sqrt(s));
  EXPECT_EQ(a1.commitment, a4.commitment);
  auto y = x;
  y[777] = std::nextafter(y[777], 1.0f);
  EXPECT_NE(announce_contribution(y, 4).commitment, a1.commitment);
}

TEST(Contribution, Int8SumOfSquaresMatchesTheDecodedValues) {
  const auto x = pseudo_grad(10000, 9);
  std::vector<uint8_t> enc(int8_encoded_bytes(x.size(), 256));
  int8_encode(x.data(), x.size(), 256, enc.data());
  std::vector<float> dec(x.size());
  int8_decode(enc.data(), x.size(), 256, dec.data());
  double s = 0;
  for (float v : dec) s += double(v) * v;
  EXPECT_NEAR(int8_sum_squares(enc.data(), x.size(), 256), s, 1e-9 * s);
}

}  // namespace
}  // namespace intellect
