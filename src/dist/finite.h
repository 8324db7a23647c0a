// The finiteness test the codecs and the ring share: an exponent of all
// ones (NaN or ±inf), tested on the integer bits, so a scan ORs it over a
// whole range and vectorises where a float compare chain would not.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace intellect {

inline uint32_t non_finite_bit(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
}

// Index of the first NaN/inf of x[0, n), or n.
inline size_t first_non_finite(const float* x, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad |= non_finite_bit(x[i]);
  if (!bad) return n;
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return n;
}

}  // namespace intellect
