// FP8 casts for the FP8 linear layers (precision.matmul "fp8"): a bf16
// tensor is scaled by a power of two chosen from its own absolute maximum so
// that it fills the format's range ("current" per-tensor scaling, as the
// default recipes of torchao and Transformer Engine), then rounded to nearest
// even with saturation to the largest finite value. The GEMM takes the
// inverse scale and undoes it in fp32 (kernels/matmul.h).
//
// Why a power of two: x · 2^k is exact in fp32, so the cast is one rounding
// of the exact value on either backend, the CPU twin below is bit for bit the
// GPU's, and the inverse scale is exact too.
//
// Formats: E4M3 (max 448, 3 mantissa bits) for weights and activations, E5M2
// (max 57344, 2 mantissa bits, more range) for the gradients that flow back.
#pragma once
#include <cstdint>

namespace intellect {
enum class Fp8Format : uint8_t { e4m3, e5m2 };
// How far apart FP8 scales are kept on the GPU (each in a slot of its own):
// cudaMalloc's alignment. cuBLASLt refused FP8 products whose scales sat 4
// bytes apart (H200, 2026-12-05) and documents no bound for them.
constexpr int kFp8ScaleSlotBytes = 256;
}

namespace intellect::cpu {

float fp8_max(Fp8Format f);  // 448 or 57344
// fp32 → the format's byte: round to nearest even, saturate finite values
// (and infinities) to ±max, NaN to a NaN.
uint8_t fp8_encode(float x, Fp8Format f);
float fp8_decode(uint8_t b, Fp8Format f);
// The scale for a tensor whose largest |x| is amax: the largest power of two
// s with amax · s ≤ max; 1 when amax is 0; capped at 2^100 for tiny amax;
// NaN when amax is not finite (the cast then makes NaNs, which the step's
// loss and gradient checks catch, as a NaN in bf16 would be).
float fp8_scale(float amax, Fp8Format f);
float absmax(const float* x, int64_t n);  // NaN when any x is NaN
// out[i] = encode(x[i] · scale)
void fp8_cast(uint8_t* out, const float* x, int64_t n, float scale, Fp8Format f);

}  // namespace intellect::cpu

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// *amax = max |x| over n values (NaN when any is NaN), as a float; the slot is
// overwritten. Stream-ordered: no host synchronisation.
void absmax(float* amax, const bf16* x, int64_t n, cudaStream_t stream);
// out = fp8(x · s), s = fp8_scale(*amax); *scale_inv = 1/s (nullable), for the GEMM.
void fp8_cast(uint8_t* out, float* scale_inv, const bf16* x, int64_t n, const float* amax, Fp8Format f,
              cudaStream_t stream);
// The same for x [rows, cols] row-major, written transposed: out [cols, rows].
void fp8_cast_transposed(uint8_t* out, float* scale_inv, const bf16* x, int64_t rows, int64_t cols,
                         const float* amax, Fp8Format f, cudaStream_t stream);
}  // namespace intellect::cuda
#endif
