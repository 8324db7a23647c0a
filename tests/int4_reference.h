// The int4 encoder and decoder as first written (src/dist/quantize4.cpp, 2026-12-03,
// commit 4ca762a), frozen: the bytes every faster kernel must reproduce
// exactly. Finite input only. Do not "improve" it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace intellect::int4_reference {

inline size_t encode_group(const float* x, size_t len, uint8_t* out) {
  float amax = 0.0f;
  for (size_t i = 0; i < len; ++i) {
    const float a = std::fabs(x[i]);
    amax = a > amax ? a : amax;
  }
  const float scale = amax / 7.0f;
  std::memcpy(out, &scale, 4);
  uint8_t* codes = out + 4;
  std::memset(codes, 0, (len + 1) / 2);
  if (amax == 0.0f) {
    for (size_t i = 0; i < len; ++i) codes[i / 2] |= static_cast<uint8_t>(8u << (4 * (i & 1)));
    return 4 + (len + 1) / 2;
  }
  const double inv_d = 7.0 / static_cast<double>(amax);
  const float inv = static_cast<float>(inv_d);
  auto pack = [&](auto scaled) {
    auto code = [&](float v) {
      float q = scaled(v);
      q = q < -7.0f ? -7.0f : (q > 7.0f ? 7.0f : q);
      return static_cast<uint32_t>(static_cast<int32_t>(q + 8.5f));
    };
    size_t i = 0;
    for (; i + 2 <= len; i += 2) codes[i / 2] = static_cast<uint8_t>(code(x[i]) | (code(x[i + 1]) << 4));
    if (i < len) codes[i / 2] = static_cast<uint8_t>(code(x[i]));
  };
  if (std::isfinite(inv)) pack([&](float v) { return v * inv; });
  else pack([&](float v) { return static_cast<float>(v * inv_d); });
  return 4 + (len + 1) / 2;
}

inline void encode(const float* x, size_t n, size_t group, uint8_t* out) {
  for (size_t begin = 0; begin < n; begin += group) out += encode_group(x + begin, std::min(group, n - begin), out);
}

template <bool kAdd>
void decode(const uint8_t* in, size_t n, size_t group, float* out) {
  for (size_t begin = 0; begin < n; begin += group) {
    const size_t len = std::min(group, n - begin);
    float scale;
    std::memcpy(&scale, in, 4);
    const uint8_t* codes = in + 4;
    for (size_t i = 0; i < len; ++i) {
      const float v = static_cast<float>(static_cast<int>((codes[i / 2] >> (4 * (i & 1))) & 0xf) - 8) * scale;
      if constexpr (kAdd) out[begin + i] += v;
      else out[begin + i] = v;
    }
    in += 4 + (len + 1) / 2;
  }
}

}  // namespace intellect::int4_reference
