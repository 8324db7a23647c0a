// The int8 codec as first written (src/dist/quantize.cpp, 2026-12-03,
// commit 4ca762a), frozen: the bytes and values every faster kernel must
// reproduce exactly, whatever the library's own code becomes. Finite input
// only (the library refuses the rest before encoding). Do not "improve" it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "dist/quantize.h"

namespace intellect::int8_reference {

inline void encode_block(const float* x, size_t n, uint8_t* out) {
  float table[kInt8Bins];
  uint8_t* codes = out + kInt8TableBytes;
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
  if (lo == hi) {
    std::memset(codes, 0, n);
    for (auto& t : table) t = lo;
    std::memcpy(out, table, kInt8TableBytes);
    return;
  }
  const double range = static_cast<double>(hi) - static_cast<double>(lo);
  const double scale_d = 255.0 / range;
  const float scale = static_cast<float>(scale_d);
  const float bias = static_cast<float>(static_cast<double>(lo) * scale_d);
  if (std::isfinite(scale) && std::isfinite(bias)) {
    for (size_t i = 0; i < n; ++i) {
      float q = x[i] * scale - bias + 0.5f;
      q = q < 0.0f ? 0.0f : q;
      q = q > 255.0f ? 255.0f : q;
      codes[i] = static_cast<uint8_t>(static_cast<int32_t>(q));
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      double q = (static_cast<double>(x[i]) - lo) * scale_d + 0.5;
      q = q < 0.0 ? 0.0 : (q > 255.0 ? 255.0 : q);
      codes[i] = static_cast<uint8_t>(static_cast<int32_t>(q));
    }
  }
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
    table[b] = c ? static_cast<float>(s / static_cast<double>(c))
                 : static_cast<float>(lo + range * (static_cast<double>(b) / 255.0));
  }
  std::memcpy(out, table, kInt8TableBytes);
}

// Blocks back to back, one thread.
inline void encode(const float* x, size_t n, size_t block, uint8_t* out) {
  for (size_t begin = 0, b = 0; begin < n; begin += block, ++b)
    encode_block(x + begin, std::min(block, n - begin), out + begin + b * kInt8TableBytes);
}

template <bool kAdd>
void decode(const uint8_t* in, size_t n, size_t block, float* out) {
  for (size_t begin = 0, b = 0; begin < n; begin += block, ++b) {
    const size_t len = std::min(block, n - begin);
    const uint8_t* p = in + begin + b * kInt8TableBytes;
    float table[kInt8Bins];
    std::memcpy(table, p, kInt8TableBytes);
    for (size_t i = 0; i < len; ++i) {
      if constexpr (kAdd) out[begin + i] += table[p[kInt8TableBytes + i]];
      else out[begin + i] = table[p[kInt8TableBytes + i]];
    }
  }
}

// The check's sum of squares. Its definition changed once, on purpose
// (2026-12-05): value i of a block adds double(v)² to lane i mod 8, a block's
// sum is its eight lanes added in order, the total its blocks' sums added in
// order (it was a histogram of each block's codes against its table). Every
// library path that computes it must give this double, bit for bit: the
// coordinator's judge recomputes what an accuser's check found.
inline double sum_squares(const uint8_t* in, size_t n, size_t block) {
  double total = 0.0;
  for (size_t begin = 0, b = 0; begin < n; begin += block, ++b) {
    const size_t len = std::min(block, n - begin);
    const uint8_t* p = in + begin + b * kInt8TableBytes;
    float table[kInt8Bins];
    std::memcpy(table, p, kInt8TableBytes);
    double lane[8] = {};
    for (size_t i = 0; i < len; ++i) {
      const double v = table[p[kInt8TableBytes + i]];
      lane[i % 8] += v * v;
    }
    double block_sum = 0.0;
    for (double l : lane) block_sum += l;
    total += block_sum;
  }
  return total;
}

}  // namespace intellect::int8_reference
