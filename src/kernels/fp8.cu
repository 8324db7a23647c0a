// FP8 casts on the GPU (kernels/fp8.h).
// Floors (bytes over copy bandwidth): absmax reads 2 bytes a value; a cast
// reads 2 and writes 1. The transposed cast moves the same bytes through a
// shared-memory tile, so its floor is the same.
#include <cuda_fp8.h>

#include "kernels/cuda_common.cuh"
#include "kernels/fp8.h"

namespace intellect::cuda {

namespace {

// bf16 → the magnitude bits of the same float (bf16 is fp32's top half), so
// that a max over unsigned integers orders magnitudes and lets a NaN win.
__device__ __forceinline__ uint32_t mag_bits(bf16 x) {
  return (static_cast<uint32_t>(__bfloat16_as_ushort(x)) & 0x7fffu) << 16;
}

__global__ void absmax_kernel(uint32_t* out, const bf16* x, int64_t n, bool vec) {
  uint32_t m = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (vec) {
    for (; i < n / 8; i += stride) {
      const Bf16x8 v = load8(x + 8 * i);
#pragma unroll
      for (int k = 0; k < 8; ++k) m = max(m, mag_bits(v.v[k]));
    }
    i = n / 8 * 8 + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // the tail
  }
  for (; i < n; i += stride) m = max(m, mag_bits(x[i]));
  m = __reduce_max_sync(0xffffffffu, m);
  __shared__ uint32_t warp_max[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < static_cast<int>(blockDim.x >> 5) ? warp_max[lane] : 0u;
    m = __reduce_max_sync(0xffffffffu, m);
    if (lane == 0) atomicMax(out, m);
  }
}

// The same rule as cpu::fp8_scale, in the same fp32 operations.
__device__ __forceinline__ float scale_of(float amax, Fp8Format f) {
  if (!isfinite(amax)) return __int_as_float(0x7fc00000);
  if (amax == 0.0f) return 1.0f;
  const float s = __fdiv_rn(f == Fp8Format::e4m3 ? 448.0f : 57344.0f, amax);
  if (!(s < 0x1p100f)) return 0x1p100f;
  return __uint_as_float(__float_as_uint(s) & 0xff800000u);
}

__device__ __forceinline__ __nv_fp8_interpretation_t interp(Fp8Format f) {
  return f == Fp8Format::e4m3 ? __NV_E4M3 : __NV_E5M2;
}

__device__ __forceinline__ uint8_t to_fp8(float v, Fp8Format f) {
  return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, interp(f));
}

__global__ void cast_kernel(uint8_t* out, float* scale_inv, const bf16* x, int64_t n, const float* amax,
                            Fp8Format f, bool vec) {
  const float s = scale_of(*amax, f);
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t == 0 && scale_inv) *scale_inv = 1.0f / s;  // exact: s is a power of two
  if (vec) {
    const int64_t i = 8 * t;
    if (i + 8 <= n) {
      const Bf16x8 v = load8(x + i);
      uint64_t packed = 0;
#pragma unroll
      for (int k = 0; k < 8; k += 2) {
        const float2 pair = make_float2(__bfloat162float(v.v[k]) * s, __bfloat162float(v.v[k + 1]) * s);
        const uint64_t two = __nv_cvt_float2_to_fp8x2(pair, __NV_SATFINITE, interp(f));
        packed |= two << (8 * k);
      }
      *reinterpret_cast<uint64_t*>(out + i) = packed;
    } else {
      for (int64_t j = i; j < n; ++j) out[j] = to_fp8(__bfloat162float(x[j]) * s, f);
    }
  } else if (t < n) {
    out[t] = to_fp8(__bfloat162float(x[t]) * s, f);
  }
}

// 64×64 tiles: 256 threads load the tile's rows (8 values each, twice) into
// shared memory, then each writes 16 consecutive bytes of one output row
// (one input column).
constexpr int kTile = 64;

__global__ void cast_transposed_kernel(uint8_t* out, float* scale_inv, const bf16* x, int64_t rows, int64_t cols,
                                       const float* amax, Fp8Format f) {
  __shared__ float tile[kTile][kTile + 1];
  const float s = scale_of(*amax, f);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0 && scale_inv) *scale_inv = 1.0f / s;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTile, c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int p = threadIdx.x; p < kTile * kTile / 8; p += blockDim.x) {
    const int r = p / (kTile / 8), c = (p % (kTile / 8)) * 8;
    const int64_t gr = r0 + r, gc = c0 + c;
    if (gr < rows && gc + 8 <= cols && (cols % 8) == 0) {
      const Bf16x8 v = load8(x + gr * cols + gc);
#pragma unroll
      for (int k = 0; k < 8; ++k) tile[r][c + k] = __bfloat162float(v.v[k]);
    } else {
      for (int k = 0; k < 8; ++k) tile[r][c + k] = (gr < rows && gc + k < cols) ? __bfloat162float(x[gr * cols + gc + k]) : 0.0f;
    }
  }
  __syncthreads();
  const int c = threadIdx.x / 4, r = (threadIdx.x % 4) * 16;  // output row c0 + c, columns r0 + r ..
  const int64_t oc = c0 + c, orow = r0 + r;
  if (oc >= cols) return;
  alignas(16) uint8_t b[16];
#pragma unroll
  for (int k = 0; k < 16; ++k) b[k] = to_fp8(tile[r + k][c] * s, f);
  uint8_t* dst = out + oc * rows + orow;
  if (orow + 16 <= rows && (rows % 16) == 0) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(b);
  } else {
    for (int k = 0; k < 16 && orow + k < rows; ++k) dst[k] = b[k];
  }
}

}  // namespace

void absmax(float* amax, const bf16* x, int64_t n, cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(float), stream));
  if (n == 0) return;
  const bool vec = aligned16(x);
  const int64_t work = vec ? n / 8 + 1 : n;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(work, 256), 132 * 8));
  absmax_kernel<<<blocks, 256, 0, stream>>>(reinterpret_cast<uint32_t*>(amax), x, n, vec);
  CUDA_CHECK_LAUNCH();
}

void fp8_cast(uint8_t* out, float* scale_inv, const bf16* x, int64_t n, const float* amax, Fp8Format f,
              cudaStream_t stream) {
  if (n == 0) return;
  const bool vec = aligned16(x) && (reinterpret_cast<uintptr_t>(out) & 7) == 0;
  const int64_t threads = vec ? (n + 7) / 8 : n;
  cast_kernel<<<ceil_div(threads, 256), 256, 0, stream>>>(out, scale_inv, x, n, amax, f, vec);
  CUDA_CHECK_LAUNCH();
}

void fp8_cast_transposed(uint8_t* out, float* scale_inv, const bf16* x, int64_t rows, int64_t cols,
                         const float* amax, Fp8Format f, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const bool ok = aligned16(x) && aligned16(out);
  if (!ok) fail("fp8_cast_transposed: operands must be 16-byte aligned");
  const dim3 grid(ceil_div(cols, kTile), ceil_div(rows, kTile));
  cast_transposed_kernel<<<grid, 256, 0, stream>>>(out, scale_inv, x, rows, cols, amax, f);
  CUDA_CHECK_LAUNCH();
}

}  // namespace intellect::cuda
