#include "dist/sparse.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "util/error.h"

namespace intellect {

static_assert(std::endian::native == std::endian::little, "the sparse wire format assumes a little-endian host");

size_t sparse_k_for_density(double density, size_t block) {
  if (!(density > 0.0 && density <= 1.0)) fail("sparse density ", density, " must be in (0, 1]");
  const double k = std::round(density * static_cast<double>(block));
  return std::clamp<size_t>(static_cast<size_t>(k), 1, block);
}

size_t sparse_kept(size_t n, size_t block, size_t k) {
  if (n == block) return k;
  return std::min(n, (static_cast<uint64_t>(k) * n + block - 1) / block);
}

size_t sparse_encoded_bytes(size_t n, size_t block, size_t k) {
  INTELLECT_CHECK(block > 0);
  const size_t full = n / block, tail = n % block;
  return full * (kSparseBlockHeader + 2 * k) + (tail ? kSparseBlockHeader + 2 * sparse_kept(tail, block, k) : 0);
}

void sparse_check_params(size_t block, size_t k, const char* what) {
  if (block < 1 || block > kSparseMaxBlock)
    fail(what, ": sparse block of ", block, " values (must be in [1, ", kSparseMaxBlock, "]: 12-bit indices)");
  if (k < 1 || k > block) fail(what, ": sparse k of ", k, " per block of ", block, " (must be in [1, block])");
}

// Computed the same way by encoder and decoder, so the grid is the same bits.
float sparse_block_step(float lo, float hi) { return (hi - lo) / 7.0f; }

namespace {

// The kept-th largest of len magnitude keys (the bits of |a|, which order
// like the values for finite non-negative floats): a histogram of the
// exponent byte finds the bin that holds it, and only that bin is searched.
uint32_t kth_largest_key(const std::vector<uint32_t>& keys, size_t len, size_t kept, std::vector<uint32_t>& sel) {
  uint32_t hist[256] = {};
  for (size_t i = 0; i < len; ++i) hist[keys[i] >> 23] += 1;
  size_t above = 0;
  int bin = 255;
  for (; bin > 0 && above + hist[bin] < kept; --bin) above += hist[bin];
  sel.clear();
  for (size_t i = 0; i < len; ++i)
    if (static_cast<int>(keys[i] >> 23) == bin) sel.push_back(keys[i]);
  const size_t need = kept - above;  // 1 ≤ need ≤ sel.size()
  std::nth_element(sel.begin(), sel.begin() + static_cast<std::ptrdiff_t>(need - 1), sel.end(), std::greater<>());
  return sel[need - 1];
}

// One block of len values (a = x + add, in scratch). Returns bytes written.
size_t encode_block(const float* a, size_t len, size_t kept, std::vector<uint32_t>& keys, std::vector<uint32_t>& sel,
                    std::vector<uint16_t>& idx, uint8_t* out) {
  // The kept set: magnitudes above the kept-th largest, then ties in index order.
  keys.resize(len);
  for (size_t i = 0; i < len; ++i) {
    uint32_t b;
    std::memcpy(&b, &a[i], 4);
    keys[i] = b & 0x7fffffffu;
  }
  idx.clear();
  if (kept == len) {
    for (size_t i = 0; i < len; ++i) idx.push_back(static_cast<uint16_t>(i));
  } else {
    const uint32_t t = kth_largest_key(keys, len, kept, sel);
    size_t above = 0;
    for (size_t i = 0; i < len; ++i) above += keys[i] > t;
    size_t ties = kept - above;
    for (size_t i = 0; i < len; ++i) {
      if (keys[i] > t || (keys[i] == t && ties > 0)) {
        if (keys[i] == t) --ties;
        idx.push_back(static_cast<uint16_t>(i));
      }
    }
  }
  auto mag = [&](size_t i) { return std::fabs(a[i]); };
  float lo = FLT_MAX, hi = 0.0f;
  for (uint16_t i : idx) {
    lo = std::min(lo, mag(i));
    hi = std::max(hi, mag(i));
  }
  const float step = sparse_block_step(lo, hi);
  std::memcpy(out, &lo, 4);
  std::memcpy(out + 4, &hi, 4);
  uint8_t* e = out + kSparseBlockHeader;
  for (size_t j = 0; j < idx.size(); ++j) {
    const uint16_t i = idx[j];
    // The nearest grid point; step may be a denormal's worth or zero.
    int m = 0;
    if (step > 0.0f)
      m = static_cast<int>(std::clamp(std::nearbyint(static_cast<double>(mag(i) - lo) / step), 0.0, 7.0));
    const uint16_t v = static_cast<uint16_t>((i << 4) | (std::signbit(a[i]) && a[i] != 0.0f ? 8u : 0u) | m);
    e[2 * j] = static_cast<uint8_t>(v & 0xff);
    e[2 * j + 1] = static_cast<uint8_t>(v >> 8);
  }
  return kSparseBlockHeader + 2 * idx.size();
}

}  // namespace

void sparse_encode(const float* x, const float* add, size_t n, size_t block, size_t k, uint8_t* out, const char* what) {
  sparse_check_params(block, k, what);
  std::vector<float> a(std::min(n, block));
  std::vector<uint32_t> keys, sel;
  std::vector<uint16_t> idx;
  idx.reserve(k);
  for (size_t begin = 0; begin < n; begin += block) {
    const size_t len = std::min(block, n - begin);
    for (size_t i = 0; i < len; ++i) {
      a[i] = add ? x[begin + i] + add[begin + i] : x[begin + i];
      if (!std::isfinite(a[i]) || std::fabs(a[i]) > FLT_MAX / 2)
        fail("sparse encoding of ", what, ": value ", begin + i, " is ", a[i],
             "; a pseudo-gradient with NaN/inf must not be averaged (the inner steps diverged: "
             "lower the learning rate or restore the last checkpoint)");
    }
    out += encode_block(a.data(), len, sparse_kept(len, block, k), keys, sel, idx, out);
  }
}

void sparse_validate(const uint8_t* in, size_t n, size_t block, size_t k, const char* what) {
  sparse_check_params(block, k, what);
  for (size_t begin = 0, b = 0; begin < n; begin += block, ++b) {
    const size_t len = std::min(block, n - begin);
    const size_t kept = sparse_kept(len, block, k);
    float lo, hi;
    std::memcpy(&lo, in, 4);
    std::memcpy(&hi, in + 4, 4);
    if (!(std::isfinite(lo) && std::isfinite(hi) && lo >= 0.0f && lo <= hi && hi <= FLT_MAX / 2))
      fail(what, ": sparse block ", b, " has magnitudes [", lo, ", ", hi,
           "] (must be finite, 0 <= lo <= hi; a diverged peer or a corrupt message)");
    const uint8_t* e = in + kSparseBlockHeader;
    int64_t prev = -1;
    for (size_t j = 0; j < kept; ++j) {
      const int64_t i = (e[2 * j] | (e[2 * j + 1] << 8)) >> 4;
      if (i <= prev || static_cast<size_t>(i) >= len)
        fail(what, ": sparse block ", b, " entry ", j, " has index ", i, " after ", prev, " in a block of ", len,
             " values (indices must ascend strictly and stay inside the block: a corrupt message)");
      prev = i;
    }
    in += kSparseBlockHeader + 2 * kept;
  }
}

void sparse_decode_add(const uint8_t* in, size_t n, size_t block, size_t k, float* acc) {
  sparse_for_each(in, n, block, k, [&](size_t i, float v) { acc[i] += v; });
}

SparseAggregation parse_sparse_aggregation(const std::string& s) {
  if (s == "mean") return SparseAggregation::Mean;
  if (s == "contributors") return SparseAggregation::Contributors;
  fail("sparse aggregation \"", s, "\" is not one of \"contributors\" (per value, the mean over the nodes that "
       "sent it) or \"mean\" (the sum over all nodes / N)");
}

const char* sparse_aggregation_name(SparseAggregation a) {
  return a == SparseAggregation::Contributors ? "contributors" : "mean";
}

void sparse_average(const uint8_t* in, size_t world, size_t n, size_t block, size_t k, float* out,
                    SparseAggregation agg) {
  INTELLECT_CHECK(world > 0);
  std::fill(out, out + n, 0.0f);
  const size_t one = sparse_encoded_bytes(n, block, k);
  if (agg == SparseAggregation::Mean) {
    for (size_t r = 0; r < world; ++r) sparse_decode_add(in + r * one, n, block, k, out);
    const float w = static_cast<float>(world);
    for (size_t i = 0; i < n; ++i) out[i] /= w;
    return;
  }
  // Contributors: the same rank-order sum, and how many kept each value
  // (indices are validated strictly ascending, so a contribution counts a
  // value at most once). A count of world divides as Mean does.
  std::vector<uint32_t> kept(n, 0);
  for (size_t r = 0; r < world; ++r)
    sparse_for_each(in + r * one, n, block, k, [&](size_t i, float v) {
      out[i] += v;
      ++kept[i];
    });
  for (size_t i = 0; i < n; ++i)
    if (kept[i] > 1) out[i] /= static_cast<float>(kept[i]);
}

}  // namespace intellect
