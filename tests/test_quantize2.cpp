// The int2 codec (dist/quantize2.h, blocks2's ring codec): round trips and
// their error against the Gaussian Lloyd-Max figure, the least-squares
// scale's orthogonality (a group never decodes to more energy than it had),
// sizes, non-finite input refused, and validate() refusing every scale that
// could decode to a non-finite value; the ring codec's byte and the round
// codec's int2 pieces.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "dist/codec.h"
#include "dist/quantize2.h"
#include "dist/quantize2_kernels.h"
#include "dist/quantize_kernels.h"
#include "dist/ring_allreduce.h"
#include "dist/round_codec.h"
#include "util/error.h"
#include "util/rng.h"

namespace intellect {
namespace {

std::vector<float> int2_round_trip(const std::vector<float>& x, size_t group) {
  std::vector<uint8_t> enc(int2_encoded_bytes(x.size(), group));
  int2_encode(x.data(), x.size(), group, enc.data());
  int2_validate(enc.data(), x.size(), group, "test");
  std::vector<float> y(x.size(), -1.0f);
  int2_decode(enc.data(), x.size(), group, y.data());
  return y;
}

std::vector<float> gaussian(size_t n, uint64_t seed, double sigma = 1.0) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(sigma * normal01(seed, i));
  return v;
}

double rel_mse(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, r = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
    r += double(x[i]) * x[i];
  }
  return e / r;
}

TEST(DistInt2, SizesAreAScaleAndAQuarterByteAValue) {
  EXPECT_EQ(int2_encoded_bytes(6400, 64), 100u * (4 + 16));
  EXPECT_EQ(int2_encoded_bytes(65, 64), (4u + 16) + (4 + 1));
  EXPECT_EQ(int2_encoded_bytes(70, 64), (4u + 16) + (4 + 2));
  EXPECT_EQ(int2_encoded_bytes(0, 64), 0u);
  EXPECT_EQ(codec_encoded_bytes(Compression::Int2, 6400, 64), 2000u);
  EXPECT_EQ(default_codec_block(Compression::Int2), 64u);
}

// Lloyd-Max's 4-level Gaussian quantizer has relative MSE 0.1175; per group
// of 64 with an RMS scale it is about that (0.112 with the refit scale).
// Heavy tails cost more but stay well under ternary or absmax grids.
TEST(DistInt2, GaussianErrorIsLloydMaxs) {
  const std::vector<float> x = gaussian(1 << 18, 3);
  const double e = rel_mse(x, int2_round_trip(x, 64));
  EXPECT_LT(e, 0.118);
  EXPECT_GT(e, 0.10) << "four levels cannot do better: the bound is not vacuous";
  // Student-t-like tails: a Gaussian times a lognormal per value.
  std::vector<float> t(1 << 18);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(normal01(5, i) * std::exp(0.7 * normal01(6, i)));
  EXPECT_LT(rel_mse(t, int2_round_trip(t, 64)), 0.30);
}

// The least-squares scale: per group, Σ x·x̂ = Σ x̂² (the error is orthogonal
// to what is sent), so ‖x̂‖ ≤ ‖x‖; codes keep every nonzero value's sign; a
// group of zeros decodes to zeros; two magnitudes per group, in the ratio of
// the levels.
TEST(DistInt2, ErrorIsOrthogonalAndSignsKept) {
  for (size_t group : {size_t{64}, size_t{7}, size_t{1}}) {
    for (size_t n : {size_t{10'007}, size_t{64}, size_t{65}, size_t{3}, size_t{0}}) {
      SCOPED_TRACE(testing::Message() << "group " << group << " n " << n);
      std::vector<float> x = gaussian(n, 11 + n, 1e-3);
      if (n > 100) {  // a zero group, a denormal group and a huge group
        std::fill(x.begin(), x.begin() + std::min(n, group), 0.0f);
        for (size_t i = group; i < std::min(n, 2 * group); ++i) x[i] = 1e-42f * static_cast<float>(i % 5 + 1);
        for (size_t i = 2 * group; i < std::min(n, 3 * group); ++i) x[i] = 1e37f * static_cast<float>(i % 3 + 1);
      }
      const std::vector<float> y = int2_round_trip(x, group);
      for (size_t b = 0; b < n; b += group) {
        const size_t end = std::min(n, b + group);
        double xy = 0, yy = 0, xx = 0;
        for (size_t i = b; i < end; ++i) {
          xy += double(x[i]) * y[i];
          yy += double(y[i]) * y[i];
          xx += double(x[i]) * x[i];
          if (x[i] != 0.0f) {
            ASSERT_EQ(std::signbit(x[i]), std::signbit(y[i])) << "value " << i;
          }
          ASSERT_TRUE(std::isfinite(y[i]));
        }
        if (xx == 0.0) {
          for (size_t i = b; i < end; ++i) ASSERT_EQ(y[i], 0.0f) << "zeros stay zeros";
          continue;
        }
        // Denormals lose precision in the float scale; elsewhere tight.
        const double tol = xx < 1e-70 ? 0.05 : 1e-5;
        ASSERT_NEAR(xy, yy, tol * xx) << "group at " << b;
        ASSERT_LE(yy, xx * (1 + tol)) << "group at " << b;
      }
    }
  }
  // Two magnitudes in a group: 0.4528 s and 1.510 s.
  const std::vector<float> x = gaussian(64, 77);
  const std::vector<float> y = int2_round_trip(x, 64);
  float lo = INFINITY, hi = 0;
  for (float v : y) {
    lo = std::min(lo, std::fabs(v));
    hi = std::max(hi, std::fabs(v));
  }
  EXPECT_NEAR(hi / lo, 1.510 / 0.4528, 1e-4);
  for (float v : y) EXPECT_TRUE(std::fabs(v) == lo || std::fabs(v) == hi) << v;
}

// decode_add adds what decode writes; a short last group is handled.
TEST(DistInt2, DecodeAddAddsTheDecodedValues) {
  const size_t n = 1000;
  const std::vector<float> x = gaussian(n, 21), base = gaussian(n, 22);
  std::vector<uint8_t> enc(int2_encoded_bytes(n, 64));
  int2_encode(x.data(), n, 64, enc.data());
  std::vector<float> d(n), acc = base;
  int2_decode(enc.data(), n, 64, d.data());
  int2_decode_add(enc.data(), n, 64, acc.data());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(acc[i], base[i] + d[i]) << i;
}

TEST(DistInt2, NonFiniteRefusedAndBadScalesCaught) {
  std::vector<float> x = gaussian(200, 1);
  std::vector<uint8_t> enc(int2_encoded_bytes(200, 64));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    x[130] = bad;
    try {
      int2_encode(x.data(), 200, 64, enc.data(), "test values");
      FAIL() << "non-finite accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("value 130"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("test values"), std::string::npos) << e.what();
    }
  }
  x[130] = 0.5f;
  int2_encode(x.data(), 200, 64, enc.data());
  int2_validate(enc.data(), 200, 64, "ok");
  // The second group's scale (after 4 + 16 bytes): every scale that could
  // decode to a non-finite value, and a negative one, is refused.
  for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN(), FLT_MAX, FLT_MAX / 1.5f, -1.0f}) {
    std::vector<uint8_t> c = enc;
    std::memcpy(c.data() + 20, &bad, 4);
    try {
      int2_validate(c.data(), 200, 64, "peer");
      FAIL() << "scale " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("group 1"), std::string::npos) << e.what();
    }
  }
  // The largest accepted scale decodes every code finite.
  std::vector<uint8_t> c = enc;
  const float top = FLT_MAX / 2.0f;
  std::memcpy(c.data() + 20, &top, 4);
  int2_validate(c.data(), 200, 64, "peer");
  std::vector<float> y(200);
  int2_decode(c.data(), 200, 64, y.data());
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  // Values near FLT_MAX encode to a scale validate() accepts.
  std::vector<float> huge(64, FLT_MAX);
  huge[3] = -FLT_MAX / 3;
  std::vector<uint8_t> h(int2_encoded_bytes(64, 64));
  int2_encode(huge.data(), 64, 64, h.data());
  int2_validate(h.data(), 64, 64, "huge");
}

// The AVX2 group encoder writes the portable encoder's bytes for every
// input class (both run here when the CPU has AVX2; without it the test
// says so and checks only the portable one against itself).
TEST(DistInt2, Avx2EncoderWritesThePortableBytes) {
  if (!int8_kernels::avx2_available()) GTEST_SKIP() << "no AVX2 on this CPU";
  auto check = [](const std::vector<float>& x, const char* what) {
    for (size_t g = 0; g + 64 <= x.size(); g += 64) {
      uint8_t a[20], b[20];
      std::memset(a, 0xaa, sizeof a);
      std::memset(b, 0x55, sizeof b);
      const bool ok_a = int2_kernels::encode_group64_avx2(x.data() + g, a);
      const bool ok_b = int2_kernels::encode_group_portable(x.data() + g, 64, b);
      ASSERT_EQ(ok_a, ok_b) << what << ", group at " << g;
      if (ok_a) {
        ASSERT_EQ(0, std::memcmp(a, b, sizeof a)) << what << ", group at " << g;
      }
    }
  };
  const size_t n = 64 * 200;
  check(gaussian(n, 41, 1e-3), "gaussian");
  std::vector<float> z(n), den(n), big(n), bits(n), ties(n), heavy(n);
  const float d = std::numeric_limits<float>::denorm_min();
  for (size_t i = 0; i < n; ++i) {
    z[i] = (hash_u64(42, i) & 1) ? 0.0f : -0.0f;
    den[i] = d * static_cast<float>(static_cast<int>(hash_u64(43, i) % 15) - 7);
    big[i] = static_cast<float>((uniform01(44, i) * 2.0 - 1.0) * FLT_MAX);
    uint32_t b = static_cast<uint32_t>(hash_u64(45, i));
    if ((b & 0x7f800000u) == 0x7f800000u) b &= ~0x00800000u;  // finite
    std::memcpy(&bits[i], &b, 4);
    ties[i] = static_cast<float>(static_cast<int>(hash_u64(46, i) % 5) - 2);  // values on the threshold's side
    heavy[i] = static_cast<float>(normal01(47, i) * std::exp(2.0 * normal01(48, i)));
  }
  check(z, "±0");
  check(den, "denormals");
  check(big, "the whole float line");
  check(bits, "random finite bit patterns");
  check(ties, "small integers");
  check(heavy, "heavy tails");
  std::vector<float> nan = gaussian(n, 49);
  nan[64 * 3 + 17] = std::numeric_limits<float>::quiet_NaN();
  nan[64 * 5] = -std::numeric_limits<float>::infinity();
  check(nan, "NaN and inf");
  // Through int2_encode (AVX2 for whole groups, portable for the tail): the
  // same bytes as the portable encoder group by group.
  const std::vector<float> x = gaussian(1000, 50);
  std::vector<uint8_t> got(int2_encoded_bytes(1000, 64)), want(got.size());
  int2_encode(x.data(), 1000, 64, got.data());
  for (size_t g = 0, at = 0; g < 1000; g += 64) {
    const size_t len = std::min<size_t>(64, 1000 - g);
    ASSERT_TRUE(int2_kernels::encode_group_portable(x.data() + g, len, want.data() + at));
    at += 4 + (len + 3) / 4;
  }
  EXPECT_EQ(got, want);
}

// The ring's header and the commitment leaves accept int2's byte (4), not
// sparse's (3) nor unknown ones; parse_compression knows "int2".
TEST(DistInt2, RingCodecByte) {
  EXPECT_TRUE(is_ring_codec_byte(0));
  EXPECT_TRUE(is_ring_codec_byte(1));
  EXPECT_TRUE(is_ring_codec_byte(2));
  EXPECT_FALSE(is_ring_codec_byte(3));
  EXPECT_TRUE(is_ring_codec_byte(4));
  EXPECT_FALSE(is_ring_codec_byte(5));
  EXPECT_EQ(parse_compression("int2"), Compression::Int2);
  EXPECT_STREQ(compression_name(Compression::Int2), "int2");
  EXPECT_EQ(make_block_codec(Compression::Int2, 64)->kind(), Compression::Int2);
  EXPECT_THROW(make_block_codec(Compression::Int2, 0), Error);
}

// A round of int2 pieces as a donor serves it: decoded to the ring's bits;
// a corrupt scale, a truncated piece and a wrong count are refused.
TEST(DistInt2, RoundCodecCarriesInt2Pieces) {
  const size_t n = 5000;
  const std::vector<float> x = gaussian(n, 31, 1e-3);
  RingCarried c;
  c.compression = Compression::Int2;
  c.block = 64;
  c.count = n;
  c.encoded.resize(int2_encoded_bytes(n, 64));
  int2_encode(x.data(), n, 64, c.encoded.data());
  RoundEncoder enc(n);
  enc.add_carried(c);
  const ByteBuffer blob = enc.finish();
  std::vector<float> got(n), want(n);
  decode_round(blob, got, "round");
  int2_decode(c.encoded.data(), n, 64, want.data());
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), n * sizeof(float)));
  EXPECT_LT(blob.size(), n * 0.3125 + 100);
  std::vector<uint8_t> bad(blob.begin(), blob.end());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bad.data() + blob.size() - int2_encoded_bytes(n, 64) + 20, &nan, 4);  // group 1's scale
  EXPECT_THROW(decode_round(bad, got, "round"), Error);
  EXPECT_THROW(decode_round(std::vector<uint8_t>(blob.begin(), blob.end() - 1), got, "round"), Error);
  std::vector<float> other(n + 1);
  EXPECT_THROW(decode_round(blob, other, "round"), Error);
  RingCarried wrong = c;
  wrong.encoded.pop_back();
  RoundEncoder e2(n);
  EXPECT_THROW(e2.add_carried(wrong), Error);
}

}  // namespace
}  // namespace intellect
