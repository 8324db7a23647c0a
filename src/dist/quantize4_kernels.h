// The int4 codec's group encoders and decoders, behind quantize4.h: a portable one and an
// AVX2 one chosen at run time, producing the same bytes for every input
// (tests/test_quantize_kernels.cpp checks both against a frozen copy of the
// original). Stateless; any thread may call them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace intellect::int4_kernels {

// One group of len values: scale, then codes. Returns the bytes written, or
// SIZE_MAX when a value is NaN/inf (the caller names it).
size_t encode_group_portable(const float* x, size_t len, uint8_t* out);

// n values in groups of `group`, back to back. Returns n, or the first index
// of the first group holding a NaN/inf (what it wrote up to there is valid).
// Call only when int8_kernels::avx2_available().
size_t encode_avx2(const float* x, size_t n, size_t group, uint8_t* out);
// int4_decode / int4_decode_add; call only when int8_kernels::avx2_available().
void decode_avx2(const uint8_t* in, size_t n, size_t group, float* out);
void decode_add_avx2(const uint8_t* in, size_t n, size_t group, float* acc);

}  // namespace intellect::int4_kernels
