// Counter-based random numbers: value i of stream `seed` is a pure function of
// (seed, i), so initialisation and sampling are identical for any thread count
// and on any standard library (std:: distributions differ between them).
#pragma once
#include <cmath>
#include <cstdint>

namespace intellect {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint64_t hash_u64(uint64_t seed, uint64_t i) { return splitmix64(splitmix64(seed) ^ i); }

// Uniform in (0, 1): never 0, so log() is safe.
inline double uniform01(uint64_t seed, uint64_t i) {
  return (static_cast<double>(hash_u64(seed, i) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Standard normal, Box–Muller on two counter-derived uniforms.
inline double normal01(uint64_t seed, uint64_t i) {
  const double u1 = uniform01(seed, 2 * i), u2 = uniform01(seed, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace intellect
