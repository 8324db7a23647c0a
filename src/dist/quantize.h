// int8 codec for pseudo-gradients on the wire: each block of fp32 values is
// mapped onto 256 uniform bins spanning the block's [min, max], and sent as
// one byte per value plus a 256-entry table holding, for each bin, the mean of
// the original values that fell into it. Decoding looks each byte up in the
// table, so a bin decodes to the mean of its members rather than its centre
// (INTELLECT-1 did the same, after hivemind's Uniform8BitQuantization).
//
// Why [min, max] and not a symmetric or ±kσ range: nothing is clipped, so
// every value decodes to within one bin width, (max − min) / 255, of itself:
// a hard bound the tests check. A σ-based range spends its bins better on a
// Gaussian core, but an outlier beyond the clip decodes to the mean of the
// edge bin, an error of many σ on exactly the coordinates that moved most.
// Blocks are small (64K values by default), so one outlier only coarsens the
// bins of its own block, and the bin means recover most of that loss.
// Pseudo-gradient blocks also have nonzero means, which an affine map keeps.
//
// Encoded block layout (little-endian): 256 float32 bin means, then n codes.
// Non-finite input is refused: a NaN or inf pseudo-gradient must never be
// averaged into everyone's parameters.
#pragma once
#include <cstddef>
#include <cstdint>

namespace intellect {

constexpr size_t kInt8Bins = 256;
constexpr size_t kInt8TableBytes = kInt8Bins * sizeof(float);

// Bytes of one encoded block of n values.
inline size_t int8_block_bytes(size_t n) { return kInt8TableBytes + n; }
// Bytes of n values encoded in blocks of `block` values (the last may be short).
size_t int8_encoded_bytes(size_t n, size_t block);

// One block. `out` holds int8_block_bytes(n). Throws Error naming the index of
// the first NaN/inf. A constant block decodes exactly; n = 0 writes a table only.
void int8_encode_block(const float* x, size_t n, uint8_t* out);

// n values in blocks of `block`, blocks encoded in parallel (OpenMP; `threads`
// caps the team, 0 = a small automatic team). The output is the blocks'
// encodings back to back; it does not depend on the thread count. `what`
// names the data in errors.
void int8_encode(const float* x, size_t n, size_t block, uint8_t* out, const char* what = "values",
                 int threads = 0);

// Checks that every table in an encoding of n values holds finite values;
// throws Error naming `what` otherwise. Codes need no check: any byte is a bin.
void int8_validate(const uint8_t* in, size_t n, size_t block, const char* what);

// Decoding (parallel over blocks). `in` must have been validated when it came
// from anywhere but our own encoder.
void int8_decode(const uint8_t* in, size_t n, size_t block, float* out, int threads = 0);
// acc[i] += decoded value i: the reduce-scatter's accumulation, done in fp32.
void int8_decode_add(const uint8_t* in, size_t n, size_t block, float* acc, int threads = 0);

// The sum of the squares of the n decoded values, in eight lanes per block
// (quantize.cpp says why and how): what a ring successor or an owner checks
// against a sender's announced norm, and the coordinator's judge recomputes.
double int8_sum_squares(const uint8_t* in, size_t n, size_t block);

// BlockCodec::decode_fused for int8 (codec.h), on the calling thread: each
// code is read once for the add, int8_sum_squares's sum and the finiteness
// test. Bit for bit int8_decode / a copy then int8_decode_add,
// and int8_sum_squares. Returns (base given) whether some out[i] is not
// finite; false without looking when base is null.
bool int8_decode_fused(const uint8_t* in, size_t n, size_t block, const float* base, float* out, double* ss);
// BlockCodec::average_fused for int8: k payloads of n values added onto own
// in order, a piece of a block at a time in a buffer the size of a core's
// first-level cache, so that own is read and out written once; each
// payload's sum of squares as int8_sum_squares's (the same double).
bool int8_average_fused(const uint8_t* const* in, size_t k, size_t n, size_t block, const float* own, float* out,
                        float divisor, double* ss);

}  // namespace intellect
