// int2 codec for blocks2's pseudo-gradients (diloco.compression "blocks2",
// dist/block_rotation.h): values in groups of `group` (64 by default), each
// group one float32 scale s followed by its 2-bit codes, four per byte (the
// lowest bits first). Code c decodes to kInt2Levels[c] · s, the levels
// ±0.4528 and ±1.510: the MSE-optimal (Lloyd-Max) 4-level quantizer of a
// unit Gaussian. The encoder puts a value in the outer level when
// |x| > 0.9816 σ (σ the group's RMS: Lloyd-Max's threshold), then fits s by
// least squares to those codes (s = Σ|x|·level / Σ level²).
//
// Why these levels and not int4's absmax grid: with four levels, an absmax
// scale spends them on the group's extremes and puts most values in the
// inner pair. Measured on 2^20 synthetic values in groups of 64
// (bench_quantize, docs/PERFORMANCE.md "2-bit codec"), relative MSE
// ‖x − x̂‖²/‖x‖²:
//   Gaussian       absmax {±1/3, ±1}·max 0.255, ternary {0, ±1.22σ} 0.186, this 0.113
//   Laplace        absmax 0.585,            ternary 0.261,              this 0.177
//   Student-t (3)  absmax 1.54,             ternary 0.379,              this 0.289
// The least-squares scale (one refit, not Lloyd iterations to convergence:
// a second refit gained under 1%) takes 2-3% off the RMS-scaled grid's
// error, and makes the error orthogonal to what is sent:
// ‖x − x̂‖² = ‖x‖² − ‖x̂‖², so a group never decodes to more energy than it
// had, and error feedback (error_feedback.h) carries the rest. There is no
// zero level (0 decodes to ±0.4528 s; a group of zeros to zeros): a zero
// level costs more on dense pseudo-gradients (the ternary row) than it saves.
//
// Encoded layout of n values (little-endian): for each group, f32 scale then
// ceil(len / 4) bytes of codes; the last group may be short. Non-finite input
// is refused like int4's. Every code pattern is valid, so only the scales need
// checking when the bytes come from a peer.
//
// Threads: stateless; any thread may call these.
#pragma once
#include <cstddef>
#include <cstdint>

namespace intellect {

constexpr size_t kInt2DefaultGroup = 64;
// Code c decodes to kInt2Levels[c] · scale.
inline constexpr float kInt2Levels[4] = {-1.510f, -0.4528f, 0.4528f, 1.510f};
// |x| above this many RMS of its group: an outer code.
constexpr double kInt2Threshold = 0.9816;

// Bytes of n values in groups of `group`.
size_t int2_encoded_bytes(size_t n, size_t group);

// n values; `out` holds int2_encoded_bytes(n, group). Throws Error naming the
// first NaN/inf and `what`.
void int2_encode(const float* x, size_t n, size_t group, uint8_t* out, const char* what = "values");
// Checks every scale is finite, not negative and no larger than FLT_MAX / 2
// (so every code decodes to a finite value); throws Error naming `what`.
void int2_validate(const uint8_t* in, size_t n, size_t group, const char* what);
void int2_decode(const uint8_t* in, size_t n, size_t group, float* out);
void int2_decode_add(const uint8_t* in, size_t n, size_t group, float* acc);

}  // namespace intellect
