#include "dist/quantize.h"

#include "dist/finite.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "dist/quantize_kernels.h"
#include "util/error.h"

namespace intellect {

// Tables are memcpy'd, not byte-swapped: every machine we target is little-endian.
static_assert(std::endian::native == std::endian::little, "the int8 wire format assumes a little-endian host");

size_t int8_encoded_bytes(size_t n, size_t block) {
  INTELLECT_CHECK(block > 0);
  const size_t nblocks = (n + block - 1) / block;
  return nblocks * kInt8TableBytes + n;
}

// The reference encoder, and the one CPUs without AVX2 run.
void int8_kernels::encode_block_portable(const float* x, size_t n, uint8_t* out) {
  float table[kInt8Bins];  // copied out with memcpy: `out` need not be aligned
  uint8_t* codes = out + kInt8TableBytes;

  if (const size_t bad = first_non_finite(x, n); bad < n)
    fail("int8 quantization: value ", bad, " of a block of ", n, " is ", x[bad],
         "; a pseudo-gradient with NaN/inf must not be averaged (the inner steps diverged: "
         "lower the learning rate or restore the last checkpoint)");
  if (n == 0) {
    for (auto& t : table) t = 0.0f;
    std::memcpy(out, table, kInt8TableBytes);
    return;
  }

  float lo = x[0], hi = x[0];
  for (size_t i = 0; i < n; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }

  // A constant block: every value is bin 0 and bin 0 is that value, exactly.
  if (lo == hi) {
    std::memset(codes, 0, n);
    for (auto& t : table) t = lo;
    std::memcpy(out, table, kInt8TableBytes);
    return;
  }

  // code = round((x − lo) · 255 / (hi − lo)), computed as x·scale − lo·scale so
  // that x − lo cannot overflow when the range spans most of the float line.
  // The range is taken in double: hi − lo may overflow or be denormal in float.
  const double range = static_cast<double>(hi) - static_cast<double>(lo);
  const double scale_d = 255.0 / range;
  const float scale = static_cast<float>(scale_d);
  const float bias = static_cast<float>(static_cast<double>(lo) * scale_d);
  if (std::isfinite(scale) && std::isfinite(bias)) {
    for (size_t i = 0; i < n; ++i) {
      float q = x[i] * scale - bias + 0.5f;
      q = q < 0.0f ? 0.0f : q;
      q = q > 255.0f ? 255.0f : q;  // truncation below is floor: q ≥ 0
      codes[i] = static_cast<uint8_t>(static_cast<int32_t>(q));
    }
  } else {  // a range of a few denormals: scale overflows float, so do it in double
    for (size_t i = 0; i < n; ++i) {
      double q = (static_cast<double>(x[i]) - lo) * scale_d + 0.5;
      q = q < 0.0 ? 0.0 : (q > 255.0 ? 255.0 : q);
      codes[i] = static_cast<uint8_t>(static_cast<int32_t>(q));
    }
  }

  // Bin means. Four interleaved histograms break the store-to-load dependency
  // when neighbouring values share a bin; sums are double so a 64K-value bin
  // mean is exact to float precision. Fixed combination order: deterministic.
  double sum[4][kInt8Bins] = {};
  uint32_t cnt[4][kInt8Bins] = {};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) {
      sum[k][codes[i + k]] += x[i + k];
      cnt[k][codes[i + k]] += 1;
    }
  }
  for (; i < n; ++i) {
    sum[0][codes[i]] += x[i];
    cnt[0][codes[i]] += 1;
  }
  for (size_t b = 0; b < kInt8Bins; ++b) {
    const double s = (sum[0][b] + sum[1][b]) + (sum[2][b] + sum[3][b]);
    const uint64_t c = uint64_t{cnt[0][b]} + cnt[1][b] + cnt[2][b] + cnt[3][b];
    // An empty bin is never looked up; its centre keeps the table monotone and finite.
    table[b] = c ? static_cast<float>(s / static_cast<double>(c))
                 : static_cast<float>(lo + range * (static_cast<double>(b) / 255.0));
  }
  std::memcpy(out, table, kInt8TableBytes);
}

void int8_encode_block(const float* x, size_t n, uint8_t* out) {
  if (int8_kernels::avx2_available()) int8_kernels::encode_block_avx2(x, n, out);
  else int8_kernels::encode_block_portable(x, n, out);
}

// Threads for one chunk's blocks. A chunk holds few blocks (16 by default)
// and each is ~0.1 ms of work, so a team as wide as the machine spends its
// time starting and spinning: on a 64-core host, four nodes with 64-thread
// teams each kept 14 cores busy and ran int8 rounds 28x slower than with
// small teams. Parallel rings multiply the teams, one per lane.
static int quantize_threads(size_t nblocks, int cap) {
  constexpr size_t kMaxTeam = 4;
  const size_t team = cap > 0 ? static_cast<size_t>(cap) : kMaxTeam;
  return static_cast<int>(std::max<size_t>(1, std::min({nblocks, team,
                                                        static_cast<size_t>(omp_get_max_threads())})));
}

void int8_encode(const float* x, size_t n, size_t block, uint8_t* out, const char* what, int threads) {
  INTELLECT_CHECK(block > 0);
  const size_t nblocks = (n + block - 1) / block;
  // Exceptions must not leave an OpenMP region: the first failing block is
  // recorded, and its message rethrown with the position in the whole buffer.
  std::string error;
  int64_t error_block = -1;
#pragma omp parallel for schedule(dynamic, 1) if (nblocks > 1 && threads != 1) \
    num_threads(quantize_threads(nblocks, threads))
  for (int64_t b = 0; b < static_cast<int64_t>(nblocks); ++b) {
    const size_t begin = static_cast<size_t>(b) * block;
    const size_t len = std::min(block, n - begin);
    try {
      int8_encode_block(x + begin, len, out + begin + static_cast<size_t>(b) * kInt8TableBytes);
    } catch (const std::exception& e) {
#pragma omp critical(int8_encode_error)
      if (error_block < 0 || b < error_block) {
        error_block = b;
        error = e.what();
      }
    }
  }
  if (error_block >= 0)
    fail("encoding ", what, " (block ", error_block, ", starting at element ",
         static_cast<size_t>(error_block) * block, "): ", error);
}

void int8_validate(const uint8_t* in, size_t n, size_t block, const char* what) {
  INTELLECT_CHECK(block > 0);
  const size_t nblocks = (n + block - 1) / block;
  float table[kInt8Bins];
  for (size_t b = 0; b < nblocks; ++b) {
    std::memcpy(table, in + b * (block + kInt8TableBytes), kInt8TableBytes);
    if (const size_t bad = first_non_finite(table, kInt8Bins); bad < kInt8Bins)
      fail(what, ": int8 block ", b, " has bin ", bad, " = ", table[bad],
           "; a peer sent a non-finite value (a diverged node or a corrupt message)");
  }
}

template <bool kAdd>
static void decode_impl(const uint8_t* in, size_t n, size_t block, float* out, int threads) {
  INTELLECT_CHECK(block > 0);
  const size_t nblocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) if (nblocks > 1 && threads != 1) \
    num_threads(quantize_threads(nblocks, threads))
  for (int64_t b = 0; b < static_cast<int64_t>(nblocks); ++b) {
    const size_t begin = static_cast<size_t>(b) * block;
    const size_t len = std::min(block, n - begin);
    const uint8_t* p = in + begin + static_cast<size_t>(b) * kInt8TableBytes;
    float table[kInt8Bins];
    std::memcpy(table, p, kInt8TableBytes);
    const uint8_t* codes = p + kInt8TableBytes;
    float* o = out + begin;
    if constexpr (kAdd) {
      for (size_t i = 0; i < len; ++i) o[i] += table[codes[i]];
    } else {
      for (size_t i = 0; i < len; ++i) o[i] = table[codes[i]];
    }
  }
}

void int8_decode(const uint8_t* in, size_t n, size_t block, float* out, int threads) {
  decode_impl<false>(in, n, block, out, threads);
}
void int8_decode_add(const uint8_t* in, size_t n, size_t block, float* acc, int threads) {
  decode_impl<true>(in, n, block, acc, threads);
}

// The sum of the squares of an int8 block's decoded values as every check
// computes it (int8_sum_squares, int8_decode_fused, int8_average_fused), so
// that a ring successor's or an owner's sum and the coordinator's judge's
// (ring_evidence.h) are the same double: value i of the block adds double(v)²
// to lane i mod 8, the block's sum is the lanes added in order, a message's
// its blocks' sums added in order. Eight sums, not one (a chain of dependent
// adds) and not a histogram of the codes against the table (a counter's
// load and store for every value, the slower of the two when the values
// are decoded anyway: 4.4 against 5.6 GB/s for a hop's decode on the dev VM).
namespace {
inline double sq(float v) { return double(v) * double(v); }
// Two lanes per instruction where the vector unit allows (cvtps2pd, mulpd,
// addpd on x86-64's baseline SSE2): a lane still takes sq(d) and one add in
// the same order, so its sum is the same double. Measured: the eighteenth
// session's note in docs/PERFORMANCE.md ("Where a steady-state direct
// round's CPU goes").
typedef float Float2 __attribute__((vector_size(8)));
typedef double Double2 __attribute__((vector_size(16)));
struct SquareLanes {
  double lane[8] = {};
  double sum() const {
    double s = 0.0;
    for (double l : lane) s += l;
    return s;
  }
  // Values d[0..7] onto lanes 0..7.
  void add8(const float* d) {
    for (int p = 0; p < 4; ++p) {
      Float2 f;
      Double2 l;
      std::memcpy(&f, d + 2 * p, sizeof f);
      std::memcpy(&l, lane + 2 * p, sizeof l);
      const Double2 e = __builtin_convertvector(f, Double2);
      l += e * e;
      std::memcpy(lane + 2 * p, &l, sizeof l);
    }
  }
};
}  // namespace

// One block of int8_decode_fused; integer bits for the finiteness test, as
// first_non_finite.
template <bool kBase, bool kSs>
static uint32_t decode_fused_block(const float* table, const uint8_t* codes, size_t len, const float* x, float* o,
                                   double* total) {
  SquareLanes lanes;
  uint32_t bad = 0;
  // Value i decoded, onto the base, checked and stored; the decoded value back for the squares.
  auto one = [&](size_t i) {
    const float d = table[codes[i]];
    float v = d;
    if constexpr (kBase) {
      v = x[i] + d;
      bad |= non_finite_bit(v);
    }
    o[i] = v;
    return d;
  };
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    float d[8];
    for (size_t k = 0; k < 8; ++k) d[k] = one(i + k);
    if constexpr (kSs) lanes.add8(d);
  }
  for (; i < len; ++i) {
    const float d = one(i);
    if constexpr (kSs) lanes.lane[i & 7] += sq(d);
  }
  if constexpr (kSs) *total += lanes.sum();
  return bad;
}

template <bool kBase, bool kSs>
static bool decode_fused_impl(const uint8_t* in, size_t n, size_t block, const float* base, float* out, double* ss) {
  const size_t nblocks = (n + block - 1) / block;
  double total = 0.0;
  uint32_t bad = 0;
  for (size_t b = 0; b < nblocks; ++b) {
    const size_t begin = b * block;
    const uint8_t* p = in + begin + b * kInt8TableBytes;
    float table[kInt8Bins];
    std::memcpy(table, p, kInt8TableBytes);
    bad |= decode_fused_block<kBase, kSs>(table, p + kInt8TableBytes, std::min(block, n - begin),
                                          kBase ? base + begin : nullptr, out + begin, &total);
  }
  if constexpr (kSs) *ss = total;
  return bad != 0;
}

bool int8_decode_fused(const uint8_t* in, size_t n, size_t block, const float* base, float* out, double* ss) {
  INTELLECT_CHECK(block > 0);
  if (base) return ss ? decode_fused_impl<true, true>(in, n, block, base, out, ss)
                      : decode_fused_impl<true, false>(in, n, block, base, out, ss);
  return ss ? decode_fused_impl<false, true>(in, n, block, base, out, ss)
            : decode_fused_impl<false, false>(in, n, block, base, out, ss);
}

bool int8_average_fused(const uint8_t* const* in, size_t k, size_t n, size_t block, const float* own, float* out,
                        float divisor, double* ss) {
  INTELLECT_CHECK(block > 0);
  constexpr size_t kPiece = 2048;  // 8 KB of sums, a multiple of 8: they stay in L1 while each payload is added
  const size_t nblocks = (n + block - 1) / block;
  std::vector<float> tables(k * kInt8Bins);
  std::vector<SquareLanes> lanes(ss ? k : 0);
  for (size_t j = 0; ss && j < k; ++j) ss[j] = 0.0;
  float acc[kPiece];
  uint32_t bad = 0;
  for (size_t b = 0; b < nblocks; ++b) {
    const size_t begin = b * block, len = std::min(block, n - begin);
    for (size_t j = 0; j < k; ++j)
      std::memcpy(&tables[j * kInt8Bins], in[j] + begin + b * kInt8TableBytes, kInt8TableBytes);
    std::fill(lanes.begin(), lanes.end(), SquareLanes{});
    for (size_t off = 0; off < len; off += kPiece) {
      const size_t m = std::min(kPiece, len - off);
      std::memcpy(acc, own + begin + off, m * sizeof(float));
      for (size_t j = 0; j < k; ++j) {
        const uint8_t* codes = in[j] + begin + b * kInt8TableBytes + kInt8TableBytes + off;
        const float* t = &tables[j * kInt8Bins];
        if (ss) {
          // Lane (off + i) mod 8 is lane i mod 8: off is a multiple of 8.
          SquareLanes& l = lanes[j];
          size_t i = 0;
          for (; i + 8 <= m; i += 8) {
            float d[8];
            for (size_t q = 0; q < 8; ++q) {
              d[q] = t[codes[i + q]];
              acc[i + q] += d[q];
            }
            l.add8(d);
          }
          for (; i < m; ++i) {
            const float d = t[codes[i]];
            acc[i] += d;
            l.lane[i & 7] += sq(d);
          }
        } else {
          for (size_t i = 0; i < m; ++i) acc[i] += t[codes[i]];
        }
      }
      float* o = out + begin + off;
      for (size_t i = 0; i < m; ++i) {
        bad |= non_finite_bit(acc[i]);  // a sum that overflowed on the way stays non-finite to the end
        o[i] = acc[i] / divisor;
      }
    }
    for (size_t j = 0; ss && j < k; ++j) ss[j] += lanes[j].sum();
  }
  return bad != 0;
}

double int8_sum_squares(const uint8_t* in, size_t n, size_t block) {
  INTELLECT_CHECK(block > 0);
  const size_t nblocks = (n + block - 1) / block;
  double total = 0.0;
  for (size_t b = 0; b < nblocks; ++b) {
    const size_t begin = b * block;
    const size_t len = std::min(block, n - begin);
    const uint8_t* p = in + begin + b * kInt8TableBytes;
    float table[kInt8Bins];
    std::memcpy(table, p, kInt8TableBytes);
    const uint8_t* codes = p + kInt8TableBytes;
    SquareLanes lanes;
    size_t i = 0;
    for (; i + 8 <= len; i += 8)
      for (size_t k = 0; k < 8; ++k) lanes.lane[k] += sq(table[codes[i + k]]);
    for (; i < len; ++i) lanes.lane[i & 7] += sq(table[codes[i]]);
    total += lanes.sum();
  }
  return total;
}

}  // namespace intellect
