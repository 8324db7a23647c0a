// int4 codec for pseudo-gradients on the wire: values in groups of `group`
// (64 by default), each group one float32 scale = max|x| / 7 followed by its
// codes, two per byte (low nibble first), code = round(x / scale) + 8 in
// [1, 15]. Decoding is (code - 8) * scale.
//
// Why small groups with an absmax scale, and not int8's one big block with
// bin means: with 16 levels, a 64K-value block spans so many σ (its extreme
// values) that nearly every value lands in the middle bin or two; a group of
// 64 values spans about ±2.5σ, so the 15 levels cover the values that are
// there. The scale costs 0.5 bit per value (4.5 bits in all, 0.14 of
// fp32). The error bound is hard: |x - decoded| ≤ scale / 2 = max|x| / 14
// of the value's group, which the tests check. Symmetric levels keep 0 exact,
// so a group of zeros (or a constant block's sign) never drifts.
//
// Encoded layout of n values (little-endian): for each group, f32 scale then
// ceil(len / 2) bytes of codes; the last group may be short. Non-finite input
// is refused like int8's. Any nibble decodes (code 0 is -8·scale), so only the
// scales need checking when the bytes come from a peer.
#pragma once
#include <cstddef>
#include <cstdint>

namespace intellect {

constexpr size_t kInt4DefaultGroup = 64;

// Bytes of n values in groups of `group`.
size_t int4_encoded_bytes(size_t n, size_t group);

// n values; `out` holds int4_encoded_bytes(n, group). Throws Error naming the
// first NaN/inf and `what`. Single-threaded: the ring runs one codec call per
// message per lane, and a group is a few ns of work.
void int4_encode(const float* x, size_t n, size_t group, uint8_t* out, const char* what = "values");
// Checks every scale is finite and no larger than FLT_MAX / 8 (so every code
// decodes to a finite value); throws Error naming `what` otherwise.
void int4_validate(const uint8_t* in, size_t n, size_t group, const char* what);
void int4_decode(const uint8_t* in, size_t n, size_t group, float* out);
void int4_decode_add(const uint8_t* in, size_t n, size_t group, float* acc);

}  // namespace intellect
