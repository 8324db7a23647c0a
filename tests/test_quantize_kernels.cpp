// The int8 codec's fast kernels against the frozen original (int8_reference.h):
// the same bytes and the same decoded values for every block, random and
// adversarial (bin edges, constant and ±0 blocks, denormal ranges, the whole
// float line, random bit patterns), every size class (0, 1, odd, around the
// 32-value vector step and the 2048-value chunk, 64K), and the same error for
// NaN/inf wherever it sits.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "dist/quantize.h"
#include "dist/quantize4.h"
#include "dist/quantize4_kernels.h"
#include "dist/quantize_kernels.h"
#include "int4_reference.h"
#include "int8_reference.h"
#include "util/error.h"
#include "util/rng.h"

namespace intellect {
namespace {

using Encoder = std::function<void(const float*, size_t, uint8_t*)>;

// The kernels this CPU can run, by name; the dispatching entry point first.
std::vector<std::pair<std::string, Encoder>> encoders() {
  std::vector<std::pair<std::string, Encoder>> e = {
      {"int8_encode_block", int8_encode_block},
      {"portable", int8_kernels::encode_block_portable},
  };
  if (int8_kernels::avx2_available()) e.push_back({"avx2", int8_kernels::encode_block_avx2});
  return e;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

// Every kernel's bytes equal the reference's, and so do the decoded values,
// the decode-and-add and the sum of squares the library computes from them.
void expect_identical(const std::vector<float>& x, const std::string& what) {
  const size_t n = x.size();
  std::vector<uint8_t> want(int8_block_bytes(n));
  int8_reference::encode_block(x.data(), n, want.data());
  for (const auto& [name, encode] : encoders()) {
    std::vector<uint8_t> got(int8_block_bytes(n), 0xAB);
    encode(x.data(), n, got.data());
    if (got != want) {
      size_t at = 0;
      while (got[at] == want[at]) ++at;
      FAIL() << name << " on " << what << " (n " << n << "): byte " << at << " is " << int(got[at]) << ", the reference "
             << int(want[at]) << (at < kInt8TableBytes ? " (in the table)" : " (a code)");
    }
  }
  if (n == 0) return;
  std::vector<float> ref(n), dec(n), acc(x), ref_acc(x);
  int8_reference::decode<false>(want.data(), n, n, ref.data());
  int8_decode(want.data(), n, n, dec.data());
  EXPECT_TRUE(same_bits(dec, ref)) << what;
  int8_reference::decode<true>(want.data(), n, n, ref_acc.data());
  int8_decode_add(want.data(), n, n, acc.data());
  EXPECT_TRUE(same_bits(acc, ref_acc)) << what;
  const double s = int8_sum_squares(want.data(), n, n), r = int8_reference::sum_squares(want.data(), n, n);
  EXPECT_EQ(std::memcmp(&s, &r, 8), 0) << what << ": " << s << " vs " << r;
}

const std::vector<size_t> kSizes = {1,  2,  3,  4,  5,  7,  8,   15,   16,   31,   32,   33,   63,   64,
                                    65, 97, 255, 1000, 2047, 2048, 2049, 2051, 4095, 4096, 4099, 65535, 65536};

std::vector<float> gaussian(size_t n, uint64_t seed, double sigma, double mean = 0.0) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const double k = uniform01(seed + 1000, i) < 1e-3 ? 20.0 : 1.0;
    v[i] = static_cast<float>(mean + sigma * k * normal01(seed, i));
  }
  return v;
}

// Any finite float, every exponent equally likely.
std::vector<float> random_bits(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t b = static_cast<uint32_t>(hash_u64(seed, i));
    if ((b & 0x7f800000u) == 0x7f800000u) b &= 0xbfffffffu;  // clear an exponent bit: finite
    std::memcpy(&v[i], &b, 4);
  }
  return v;
}

TEST(Int8Kernels, RandomBlocksOfEverySize) {
  uint64_t seed = 1;
  for (size_t n : kSizes) {
    expect_identical(gaussian(n, seed++, 1e-3), "gaussian");
    expect_identical(gaussian(n, seed++, 1e-7, 3.0), "a narrow range far from zero");
    expect_identical(random_bits(n, seed++), "random finite bit patterns");
    std::vector<float> u(n);
    for (size_t i = 0; i < n; ++i) u[i] = static_cast<float>(uniform01(seed, i) * 2.0 - 1.0);
    expect_identical(u, "uniform");
    ++seed;
  }
}

// Values on and next to every bin edge, where x·scale − bias + 0.5 lands on
// (or one rounding away from) an integer.
TEST(Int8Kernels, BinEdgesAndTheirNeighbours) {
  for (auto [lo, hi] : {std::pair{-1.0f, 1.0f}, std::pair{0.0f, 255.0f}, std::pair{-3e-3f, 7e-4f},
                        std::pair{1e6f, 1e6f + 2048.0f}, std::pair{-1e-30f, 1e-30f}}) {
    std::vector<float> v = {lo, hi};
    const double w = (double(hi) - lo) / 255.0;
    for (int k = 0; k < 255; ++k) {
      const float edge = static_cast<float>(lo + (k + 0.5) * w);
      for (float e : {edge, std::nextafter(edge, -INFINITY), std::nextafter(edge, INFINITY)})
        if (e >= lo && e <= hi) v.push_back(e);
      v.push_back(static_cast<float>(lo + k * w));
    }
    expect_identical(v, "bin edges");
    std::vector<float> rev(v.rbegin(), v.rend());
    expect_identical(rev, "bin edges, reversed");
  }
}

TEST(Int8Kernels, ConstantAndSignedZeroBlocks) {
  for (size_t n : kSizes) {
    for (float c : {0.0f, -0.0f, 1.0f, -0.3125f, 1e-45f, -FLT_MAX}) expect_identical(std::vector<float>(n, c), "constant");
    std::vector<float> z(n);
    for (size_t i = 0; i < n; ++i) z[i] = (hash_u64(9, i) & 1) ? 0.0f : -0.0f;
    expect_identical(z, "mixed ±0");
    z[n / 2] = 1.0f;
    expect_identical(z, "mixed ±0 and one 1");
    z[n / 2] = -1.0f;
    expect_identical(z, "mixed ±0 and one -1");
  }
  expect_identical({-0.0f, 0.0f}, "-0 then +0");
  expect_identical({0.0f, -0.0f, 2.0f}, "+0, -0, 2");
  expect_identical({-0.0f, 0.0f, -2.0f}, "-0, +0, -2");
  expect_identical({}, "empty");
}

TEST(Int8Kernels, DenormalsAndExtremeRanges) {
  const float d = std::numeric_limits<float>::denorm_min();
  for (size_t n : kSizes) {
    std::vector<float> a(n), b(n), c(n), e(n);
    for (size_t i = 0; i < n; ++i) {
      a[i] = d * static_cast<float>(hash_u64(1, i) % 7);                          // a few denormals: the double map
      b[i] = d * static_cast<float>(static_cast<int>(hash_u64(2, i) % 2001) - 1000);  // denormals of both signs
      c[i] = static_cast<float>((uniform01(3, i) * 2.0 - 1.0) * FLT_MAX);         // the whole float line
      e[i] = (hash_u64(4, i) % 3 == 0) ? FLT_MAX : (hash_u64(4, i) % 3 == 1 ? -FLT_MAX : FLT_MIN);
    }
    expect_identical(a, "a few denormals");
    expect_identical(b, "denormals of both signs");
    expect_identical(c, "the whole float line");
    expect_identical(e, "±FLT_MAX and FLT_MIN");
  }
  expect_identical({-3e38f, 3e38f, 0.0f}, "wide");
  expect_identical({1e-45f, 3e-45f, 1e-45f}, "three denormals");
  expect_identical({FLT_MIN, std::nextafter(FLT_MIN, 1.0f)}, "two neighbours at FLT_MIN");
  expect_identical({1e30f, std::nextafter(1e30f, INFINITY), 1e30f}, "one ulp at 1e30");
}

// Long runs in one bin: each stream's sum for that bin is one long chain,
// the case where an order change would show.
TEST(Int8Kernels, RepeatsAndSortedBlocks) {
  for (size_t n : {size_t{4099}, size_t{65536}}) {
    auto g = gaussian(n, 77, 1.0);
    for (size_t i = 0; i < n; ++i)
      if (hash_u64(5, i) % 4) g[i] = 0.1f + static_cast<float>(i % 13) * 1e-9f;
    expect_identical(g, "mostly one bin");
    auto s = gaussian(n, 78, 1.0);
    std::sort(s.begin(), s.end());
    expect_identical(s, "sorted");
    std::reverse(s.begin(), s.end());
    expect_identical(s, "sorted descending");
  }
}

// A bin whose mean depends on the order its sums are combined in: stream
// sums s0 = 2^-10, s1 = 2^-34, s2 = s3 = 0.375 ulp(2^-10). (s0 + s1) + (s2 + s3)
// is 2^-10 + 2^-34 + 1 ulp, whose quarter rounds up to float; (s0 + s2) +
// (s1 + s3) loses s2 and lands on the float midpoint, which rounds down to
// 2^-12. A kernel that combined the four streams otherwise would fail here.
TEST(Int8Kernels, BinSumsCombineInTheReferenceOrder) {
  const float s2 = std::ldexp(3.0f, -65);
  const std::vector<float> x = {std::ldexp(1.0f, -10), std::ldexp(1.0f, -34), s2, s2, -1.0f, 1.0f};
  std::vector<uint8_t> want(int8_block_bytes(x.size()));
  int8_reference::encode_block(x.data(), x.size(), want.data());
  ASSERT_EQ(want[kInt8TableBytes], 128);  // the four small values share bin 128
  ASSERT_EQ(want[kInt8TableBytes + 3], 128);
  float mean;
  std::memcpy(&mean, want.data() + 4 * 128, 4);
  ASSERT_EQ(mean, std::nextafter(std::ldexp(1.0f, -12), 1.0f)) << "the reference's order decides this bin's mean";
  expect_identical(x, "order-sensitive bin");
}

// The whole-buffer entry point: the reference's blocks back to back, at any
// thread count.
TEST(Int8Kernels, ManyBlocksMatchTheReferenceAtAnyThreadCount) {
  const size_t n = 300'001, block = 65536;
  const auto x = gaussian(n, 11, 1e-3);
  std::vector<uint8_t> want(int8_encoded_bytes(n, block));
  int8_reference::encode(x.data(), n, block, want.data());
  for (int t : {1, 2, 4}) {
    std::vector<uint8_t> got(want.size());
    int8_encode(x.data(), n, block, got.data(), "values", t);
    EXPECT_EQ(got, want) << t << " threads";
  }
  std::vector<float> a(n), b(n);
  int8_decode(want.data(), n, block, a.data(), 2);
  int8_reference::decode<false>(want.data(), n, block, b.data());
  EXPECT_TRUE(same_bits(a, b));
  const double s = int8_sum_squares(want.data(), n, block), r = int8_reference::sum_squares(want.data(), n, block);
  EXPECT_EQ(std::memcmp(&s, &r, 8), 0) << s << " vs " << r;
}

// A peer's bytes are not ours: any table, any codes. Decoding and the sum of
// squares still equal the reference's exactly.
TEST(Int8Kernels, ArbitraryBytesDecodeLikeTheReference) {
  for (size_t n : {size_t{1}, size_t{33}, size_t{5000}, size_t{65536}}) {
    std::vector<uint8_t> in(int8_block_bytes(n));
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(hash_u64(n, i));
    float* t = reinterpret_cast<float*>(in.data());  // keep the table finite, as validation would
    for (size_t k = 0; k < kInt8Bins; ++k)
      if (!std::isfinite(t[k])) t[k] = static_cast<float>(k);
    int8_validate(in.data(), n, n, "test");
    std::vector<float> a(n), b(n);
    int8_decode(in.data(), n, n, a.data());
    int8_reference::decode<false>(in.data(), n, n, b.data());
    EXPECT_TRUE(same_bits(a, b)) << n;
    const double s = int8_sum_squares(in.data(), n, n), r = int8_reference::sum_squares(in.data(), n, n);
    EXPECT_EQ(std::memcmp(&s, &r, 8), 0) << n << ": " << s << " vs " << r;
  }
}

// NaN/inf anywhere (in the vector body, the scalar tail, first, last) is
// refused by every kernel with the same message.
TEST(Int8Kernels, NonFiniteRefusedTheSameWayEverywhere) {
  for (size_t n : {size_t{1}, size_t{31}, size_t{32}, size_t{100}, size_t{4099}}) {
    for (size_t at : {size_t{0}, n / 2, n - 1}) {
      for (float bad : {NAN, INFINITY, -INFINITY}) {
        auto x = gaussian(n, 21, 1.0);
        x[at] = bad;
        std::string first;
        for (const auto& [name, encode] : encoders()) {
          std::vector<uint8_t> out(int8_block_bytes(n));
          try {
            encode(x.data(), n, out.data());
            ADD_FAILURE() << name << " accepted " << bad << " at " << at << " of " << n;
          } catch (const Error& e) {
            const std::string m = e.what();
            EXPECT_NE(m.find("value " + std::to_string(at) + " of a block of " + std::to_string(n)), std::string::npos)
                << name << ": " << m;
            if (first.empty()) first = m;
            EXPECT_EQ(m, first) << name;
          }
        }
      }
    }
  }
}

// --- int4 --------------------------------------------------------------------

// int4_encode (whichever kernel this CPU runs), the portable group encoder and,
// where available, the AVX2 one: the reference's bytes, for every group size.
void expect_int4_identical(const std::vector<float>& x, const std::string& what) {
  const size_t n = x.size();
  for (size_t group : {size_t{1}, size_t{2}, size_t{7}, size_t{32}, size_t{33}, size_t{64}, size_t{100}, size_t{4096}}) {
    std::vector<uint8_t> want(int4_encoded_bytes(n, group));
    int4_reference::encode(x.data(), n, group, want.data());
    std::vector<uint8_t> got(want.size(), 0xAB), portable(want.size(), 0xCD);
    int4_encode(x.data(), n, group, got.data(), "test");
    EXPECT_EQ(got, want) << what << ", n " << n << ", group " << group;
    uint8_t* o = portable.data();
    for (size_t b = 0; b < n; b += group) o += int4_kernels::encode_group_portable(x.data() + b, std::min(group, n - b), o);
    EXPECT_EQ(portable, want) << "portable: " << what << ", n " << n << ", group " << group;
    if (int8_kernels::avx2_available()) {
      std::vector<uint8_t> avx(want.size(), 0xEF);
      EXPECT_EQ(int4_kernels::encode_avx2(x.data(), n, group, avx.data()), n);
      EXPECT_EQ(avx, want) << "avx2: " << what << ", n " << n << ", group " << group;
    }
  }
}

TEST(Int4Kernels, EveryInputClassMatchesTheReference) {
  const float d = std::numeric_limits<float>::denorm_min();
  uint64_t seed = 100;
  for (size_t n : {size_t{0}, size_t{1}, size_t{31}, size_t{64}, size_t{65}, size_t{1000}, size_t{4099}}) {
    expect_int4_identical(gaussian(n, seed++, 1e-3), "gaussian");
    expect_int4_identical(random_bits(n, seed++), "random finite bit patterns");
    std::vector<float> z(n), den(n), ties(n);
    for (size_t i = 0; i < n; ++i) {
      z[i] = (hash_u64(seed, i) & 1) ? 0.0f : -0.0f;
      den[i] = d * static_cast<float>(static_cast<int>(hash_u64(seed + 1, i) % 15) - 7);
      // k/14 of a group's max: q lands on a half step, where rounding decides
      ties[i] = static_cast<float>(static_cast<int>(hash_u64(seed + 2, i) % 29) - 14) / 14.0f;
    }
    expect_int4_identical(z, "±0");
    expect_int4_identical(den, "denormals");
    expect_int4_identical(ties, "half steps");
    std::vector<float> big(n);
    for (size_t i = 0; i < n; ++i) big[i] = static_cast<float>((uniform01(seed + 3, i) * 2.0 - 1.0) * FLT_MAX);
    expect_int4_identical(big, "the whole float line");
    seed += 4;
  }
}

// Any bytes a peer may send (finite scales, any nibbles): the reference's
// values, decoded and added, for every group size.
TEST(Int4Kernels, ArbitraryBytesDecodeLikeTheReference) {
  for (size_t n : {size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{64}, size_t{1001}, size_t{65536}}) {
    for (size_t group : {size_t{1}, size_t{3}, size_t{16}, size_t{33}, size_t{64}, size_t{4096}}) {
      std::vector<uint8_t> in(int4_encoded_bytes(n, group));
      for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(hash_u64(n * 131 + group, i));
      for (size_t b = 0, at = 0; b < n; b += group) {  // a finite scale at the head of every group
        const float scale = static_cast<float>(normal01(group, b)) * 1e-3f;
        std::memcpy(in.data() + at, &scale, 4);
        at += 4 + (std::min(group, n - b) + 1) / 2;
      }
      int4_validate(in.data(), n, group, "test");
      std::vector<float> a(n), b(n), acc(gaussian(n, 3, 1.0)), ref_acc(acc);
      int4_decode(in.data(), n, group, a.data());
      int4_reference::decode<false>(in.data(), n, group, b.data());
      EXPECT_TRUE(same_bits(a, b)) << "decode, n " << n << ", group " << group;
      int4_decode_add(in.data(), n, group, acc.data());
      int4_reference::decode<true>(in.data(), n, group, ref_acc.data());
      EXPECT_TRUE(same_bits(acc, ref_acc)) << "decode_add, n " << n << ", group " << group;
    }
  }
}

TEST(Int4Kernels, NonFiniteNamedAfterTheGroupsBeforeIt) {
  for (size_t at : {size_t{0}, size_t{63}, size_t{64}, size_t{1000}, size_t{4098}}) {
    auto x = gaussian(4099, 5, 1.0);
    x[at] = NAN;
    std::vector<uint8_t> out(int4_encoded_bytes(x.size(), 64));
    try {
      int4_encode(x.data(), x.size(), 64, out.data(), "the pseudo-gradient");
      ADD_FAILURE() << "NaN at " << at << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("value " + std::to_string(at) + " is"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace intellect
