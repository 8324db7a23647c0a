// FP8 casts on the CPU: the reference the GPU's conversions are held to bit
// for bit (tests/gpu/test_kernels_cuda.cpp), written from the formats'
// definitions rather than from any conversion routine.
#include <cmath>
#include <cstring>

#include "kernels/fp8.h"

namespace intellect::cpu {

namespace {

struct Format {
  int mbits;     // mantissa bits
  int bias;      // exponent bias
  float max;     // largest finite value
  uint8_t nan;   // the NaN the GPU's conversion writes (positive)
};

Format format(Fp8Format f) {
  // E4M3 has no infinities: exponent 15 is normal except mantissa 111 (NaN),
  // so its max is 1.75 · 2^8. E5M2 is IEEE-like: exponent 31 is inf/NaN.
  return f == Fp8Format::e4m3 ? Format{3, 7, 448.0f, 0x7f} : Format{2, 15, 57344.0f, 0x7f};
}

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}
float from_bits(uint32_t b) {
  float x;
  std::memcpy(&x, &b, 4);
  return x;
}

}  // namespace

float fp8_max(Fp8Format f) { return format(f).max; }

uint8_t fp8_encode(float x, Fp8Format f) {
  const Format F = format(f);
  if (std::isnan(x)) return F.nan;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  const int emin = 1 - F.bias;  // exponent of the smallest normal
  // The spacing of representable values around a: 2^(e − mbits) in a's
  // binade, and the subnormals' fixed spacing below the smallest normal.
  int e = a > 0.0f ? std::ilogb(a) : emin;
  if (e < emin) e = emin;
  const float quantum = std::ldexp(1.0f, e - F.mbits);
  float r = std::nearbyint(a / quantum) * quantum;  // a / quantum is exact; nearbyint rounds to even
  if (!(r <= F.max)) r = F.max;                     // saturate (also catches a = inf)
  if (r == 0.0f) return sign;
  int re = std::ilogb(r);
  if (re < emin) {  // subnormal: exponent field 0, mantissa r / 2^(emin − mbits)
    const int m = static_cast<int>(r / std::ldexp(1.0f, emin - F.mbits));
    return static_cast<uint8_t>(sign | m);
  }
  const int m = static_cast<int>(r / std::ldexp(1.0f, re - F.mbits)) - (1 << F.mbits);
  return static_cast<uint8_t>(sign | (re + F.bias) << F.mbits | m);
}

float fp8_decode(uint8_t b, Fp8Format f) {
  const Format F = format(f);
  const int ebits = 7 - F.mbits;
  const int exp = (b >> F.mbits) & ((1 << ebits) - 1);
  const int man = b & ((1 << F.mbits) - 1);
  const float sign = (b & 0x80) ? -1.0f : 1.0f;
  if (f == Fp8Format::e4m3 && exp == 15 && man == 7) return NAN;
  if (f == Fp8Format::e5m2 && exp == 31) return man == 0 ? sign * INFINITY : NAN;
  if (exp == 0) return sign * std::ldexp(static_cast<float>(man), 1 - F.bias - F.mbits);
  return sign * std::ldexp(static_cast<float>(man + (1 << F.mbits)), exp - F.bias - F.mbits);
}

float fp8_scale(float amax, Fp8Format f) {
  if (!std::isfinite(amax)) return NAN;
  if (amax == 0.0f) return 1.0f;
  const float s = format(f).max / amax;
  if (!(s < 0x1p100f)) return 0x1p100f;
  return from_bits(bits_of(s) & 0xff800000u);  // round down to a power of two (s is normal here)
}

float absmax(const float* x, int64_t n) {
  // On magnitude bits, as the GPU does: a NaN's exceed every finite value's and infinity's.
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t b = bits_of(x[i]) & 0x7fffffffu;
    m = b > m ? b : m;
  }
  return from_bits(m);
}

void fp8_cast(uint8_t* out, const float* x, int64_t n, float scale, Fp8Format f) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp8_encode(x[i] * scale, f);
}

}  // namespace intellect::cpu
