// RMSNorm on the GPU, forward fused with the residual add that precedes it.
//
// Forward, one block per row: pass 1 adds the residual (writing the sum) and
// accumulates Σx²; pass 2 re-reads the sum (hot in L2) and writes the norm.
// DRAM floor: read a, b; write sum, norm: 8 bytes per element.
// Backward: pass 1 Σ g·w·x per row, pass 2 dx and per-block dw partials; a
// second kernel reduces the partials in block order (deterministic).
// Backward DRAM floor: read dout, x and dx, write dx: 8 bytes per element.
#include "kernels/cuda_common.cuh"
#include "kernels/rmsnorm.h"

#include <algorithm>
#include <cstdlib>

namespace intellect::cuda {

namespace {

constexpr int kThreads = 256;

template <bool kVec>
__global__ void residual_rmsnorm_forward_kernel(bf16* resid_out, bf16* norm_out, float* rstd,
                                                const bf16* a, const bf16* b, const bf16* w,
                                                int64_t D, float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const bf16* ar = a + row * D;
  const bf16* br = b ? b + row * D : nullptr;
  bf16* sr = b ? resid_out + row * D : nullptr;
  const bf16* xr = b ? sr : ar;  // the row the norm reads
  float ss = 0.0f;
  if constexpr (kVec) {
    for (int64_t i = threadIdx.x * 8; i < D; i += blockDim.x * 8) {
      Bf16x8 x = load8(ar + i);
      if (br) {
        const Bf16x8 y = load8(br + i);
#pragma unroll
        for (int k = 0; k < 8; ++k)
          x.v[k] = __float2bfloat16(__bfloat162float(x.v[k]) + __bfloat162float(y.v[k]));
        store8(sr + i, x);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float f = __bfloat162float(x.v[k]);
        ss += f * f;
      }
    }
  } else {
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      bf16 x = ar[i];
      if (br) {
        x = __float2bfloat16(__bfloat162float(x) + __bfloat162float(br[i]));
        sr[i] = x;
      }
      const float f = __bfloat162float(x);
      ss += f * f;
    }
  }
  const float r = rsqrtf(block_sum(ss, scratch) / static_cast<float>(D) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  bf16* out = norm_out + row * D;
  if constexpr (kVec) {
    for (int64_t i = threadIdx.x * 8; i < D; i += blockDim.x * 8) {
      const Bf16x8 x = load8(xr + i), g = load8(w + i);
      Bf16x8 o;
#pragma unroll
      for (int k = 0; k < 8; ++k)
        o.v[k] = __float2bfloat16(__bfloat162float(g.v[k]) * (__bfloat162float(x.v[k]) * r));
      store8(out + i, o);
    }
  } else {
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
      out[i] = __float2bfloat16(__bfloat162float(w[i]) * (__bfloat162float(xr[i]) * r));
  }
}

// Grid-stride over rows; partial dw for this block's rows in shared memory,
// each column owned by one thread, so the partial sums are deterministic.
__global__ void rmsnorm_backward_kernel(bf16* dx, float* partial, const bf16* dout, const bf16* x,
                                        const bf16* w, const float* rstd, int64_t N, int64_t D,
                                        bool accumulate) {
  extern __shared__ float dw_part[];  // D floats
  __shared__ float scratch[32];
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) dw_part[i] = 0.0f;
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const bf16* g = dout + row * D;
    const bf16* xr = x + row * D;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
      dot += __bfloat162float(g[i]) * __bfloat162float(w[i]) * __bfloat162float(xr[i]);
    dot = block_sum(dot, scratch);
    const float c = r * r * r * dot / static_cast<float>(D);
    bf16* o = dx + row * D;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const float gi = __bfloat162float(g[i]), xi = __bfloat162float(xr[i]);
      float v = r * __bfloat162float(w[i]) * gi - c * xi;
      if (accumulate) v += __bfloat162float(o[i]);
      o[i] = __float2bfloat16(v);
      dw_part[i] += gi * xi * r;
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) partial[blockIdx.x * D + i] = dw_part[i];
}

// The fast path for D % 8 == 0 and D ≤ 8·1024: each thread owns one group of
// 8 columns, keeps its slice of the row (dout, x and the dx it adds to) in
// registers between the two passes, and its dw partials in registers too.
// Few registers, so several blocks share an SM and more rows are in flight.
__global__ void __launch_bounds__(1024) rmsnorm_backward_vec_kernel(
    bf16* dx, float* partial, const bf16* dout, const bf16* x, const bf16* w, const float* rstd,
    int64_t N, int64_t D, bool accumulate) {
  __shared__ float scratch[32];
  const int64_t c = static_cast<int64_t>(threadIdx.x) * 8;
  const bool own = c < D;
  float dw[8] = {};
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    float gv[8], xv[8];
    Bf16x8 prev;  // the dx to accumulate into, loaded with the row: one memory round trip
    float dot = 0.0f;
    if (own) {
      if (accumulate) prev = load8(dx + row * D + c);
      const Bf16x8 gt = load8(dout + row * D + c), xt = load8(x + row * D + c), wt = load8(w + c);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        gv[k] = __bfloat162float(gt.v[k]);
        xv[k] = __bfloat162float(xt.v[k]);
        dot += gv[k] * __bfloat162float(wt.v[k]) * xv[k];
      }
    }
    dot = block_sum(dot, scratch);
    if (!own) continue;
    const float r = rstd[row];
    const float c3 = r * r * r * dot / static_cast<float>(D);
    const Bf16x8 wt = load8(w + c);  // the gain vector is an L1 hit
    Bf16x8 o;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      float v = r * __bfloat162float(wt.v[k]) * gv[k] - c3 * xv[k];
      if (accumulate) v += __bfloat162float(prev.v[k]);
      o.v[k] = __float2bfloat16(v);
      dw[k] += gv[k] * xv[k] * r;
    }
    store8(dx + row * D + c, o);
  }
  if (own)
#pragma unroll
    for (int k = 0; k < 8; ++k) partial[blockIdx.x * D + c + k] = dw[k];
}

// Hopper's bulk copy engine (TMA, 1-D form) with an mbarrier per stage: one
// thread asks for whole rows and the copy engine lands them in shared memory
// while the block works on earlier rows. The register kernel above keeps
// only the rows its threads have loads outstanding for (about four per SM,
// each stalled behind the block reduction); here `stages` rows per block
// are in flight regardless of what the threads are doing.
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(arrivals) : "memory");
}
__device__ __forceinline__ void mbar_expect_bytes(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
}
// `bytes` a multiple of 16, both addresses 16-byte aligned.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_u32(dst)),
               "l"(src), "r"(bytes), "r"(smem_u32(bar))
               : "memory");
}

constexpr size_t kTmaBarrierBytes = 128;  // the stages' mbarriers, before the row buffers

template <bool kAccumulate>
__global__ void __launch_bounds__(1024) rmsnorm_backward_tma_kernel(
    bf16* dx, float* partial, const bf16* dout, const bf16* x, const bf16* w, const float* rstd, int64_t N,
    int64_t D, int stages) {
  constexpr int kRows = kAccumulate ? 3 : 2;  // dout, x (and the dx added to) per stage
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ float scratch[32];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem);
  bf16* buf = reinterpret_cast<bf16*>(smem + kTmaBarrierBytes);
  const uint32_t row_bytes = static_cast<uint32_t>(D * sizeof(bf16));
  auto issue = [&](int s, int64_t row) {
    bf16* b = buf + static_cast<int64_t>(s) * kRows * D;
    mbar_expect_bytes(&full[s], kRows * row_bytes);
    bulk_load(b, dout + row * D, row_bytes, &full[s]);
    bulk_load(b + D, x + row * D, row_bytes, &full[s]);
    if (kAccumulate) bulk_load(b + 2 * D, dx + row * D, row_bytes, &full[s]);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) mbar_init(&full[s], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int s = 0; s < stages; ++s)
      if (const int64_t row = blockIdx.x + static_cast<int64_t>(s) * gridDim.x; row < N) issue(s, row);

  const int64_t c = static_cast<int64_t>(threadIdx.x) * 8;
  const bool own = c < D;
  Bf16x8 wt{};
  if (own) wt = load8(w + c);
  float dw[8] = {};
  int64_t it = 0;
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x, ++it) {
    const int s = static_cast<int>(it % stages);
    mbar_wait(&full[s], static_cast<uint32_t>((it / stages) & 1));
    const bf16* b = buf + static_cast<int64_t>(s) * kRows * D;
    float gv[8], xv[8], pv[8];
    float dot = 0.0f;
    if (own) {
      const Bf16x8 gt = load8(b + c), xt = load8(b + D + c);
      Bf16x8 pt{};
      if (kAccumulate) pt = load8(b + 2 * D + c);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        gv[k] = __bfloat162float(gt.v[k]);
        xv[k] = __bfloat162float(xt.v[k]);
        pv[k] = kAccumulate ? __bfloat162float(pt.v[k]) : 0.0f;
        dot += gv[k] * __bfloat162float(wt.v[k]) * xv[k];
      }
    }
    // Its barriers also mean every thread has read stage s: refill it now,
    // so the copy runs while this row's dx is computed and stored.
    dot = block_sum(dot, scratch);
    if (threadIdx.x == 0) {
      if (const int64_t next = row + static_cast<int64_t>(stages) * gridDim.x; next < N) {
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // our reads before the engine's writes
        issue(s, next);
      }
    }
    if (!own) continue;
    const float r = rstd[row];
    const float c3 = r * r * r * dot / static_cast<float>(D);
    Bf16x8 o;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      o.v[k] = __float2bfloat16(r * __bfloat162float(wt.v[k]) * gv[k] - c3 * xv[k] + pv[k]);
      dw[k] += gv[k] * xv[k] * r;
    }
    store8(dx + row * D + c, o);
  }
  if (own)
#pragma unroll
    for (int k = 0; k < 8; ++k) partial[blockIdx.x * D + c + k] = dw[k];
}

// dw[c] (+)= Σ_b partial[b][c]: one block of 32 warps per 32 columns; warp w
// sums partial rows w, w+32, … (coalesced 128-byte reads), then the warp sums
// combine in warp order. Fixed order throughout, so dw is deterministic. The
// sum is rounded once when the gradient buffer is bf16.
template <typename G>
__global__ void __launch_bounds__(1024) reduce_partials_kernel(G* dw, const float* partial, int blocks,
                                                               int64_t D, bool accumulate) {
  __shared__ float part[32][33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t c = blockIdx.x * 32 + lane;
  float s = 0.0f;
  if (c < D)
    for (int b = warp; b < blocks; b += 32) s += partial[b * D + c];
  part[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && c < D) {
    float t = 0.0f;
    for (int w = 0; w < 32; ++w) t += part[w][lane];
    if constexpr (sizeof(G) == 4) {
      dw[c] = accumulate ? dw[c] + t : t;
    } else {
      dw[c] = __float2bfloat16(accumulate ? __bfloat162float(dw[c]) + t : t);
    }
  }
}

void reduce_partials(const GradOut& dw, const float* partial, int blocks, int64_t D, cudaStream_t stream) {
  if (dw.bf16)
    reduce_partials_kernel<<<ceil_div(D, 32), 1024, 0, stream>>>(dw.as<bf16>(), partial, blocks, D,
                                                                  dw.accumulate);
  else
    reduce_partials_kernel<<<ceil_div(D, 32), 1024, 0, stream>>>(dw.as<float>(), partial, blocks, D,
                                                                  dw.accumulate);
  CUDA_CHECK_LAUNCH();
}

int backward_blocks(int64_t N) {
  int device = 0, sms = 132;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return static_cast<int>(N < 4 * sms ? N : 4 * sms);
}

// The TMA path: sm_90+, and at least two stages of rows in shared memory.
int tma_backward_stages(int64_t D, bool accumulate) {
  const size_t per_stage = (accumulate ? 3 : 2) * static_cast<size_t>(D) * sizeof(bf16);
  const size_t budget = 100 * 1024;  // two blocks per SM within Hopper's 227 KB
  return static_cast<int>(std::min<size_t>(4, budget / per_stage));
}
bool tma_backward_fits(int64_t D, bool accumulate) {
  static const int major = [] {
    int device = 0, m = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, device);
    return m;
  }();
  static const bool disabled = std::getenv("INTELLECT_RMSNORM_NO_TMA") != nullptr;
  return !disabled && major >= 9 && tma_backward_stages(D, accumulate) >= 2;
}
// As many blocks as fit on the GPU at once, never more than the scratch was sized for.
int tma_backward_blocks(int64_t N, int64_t D, bool accumulate, int threads, size_t smem) {
  int device = 0, sms = 132, per_sm = 1;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const void* kernel = accumulate ? reinterpret_cast<const void*>(rmsnorm_backward_tma_kernel<true>)
                                  : reinterpret_cast<const void*>(rmsnorm_backward_tma_kernel<false>);
  if (smem > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  (void)D;
  return static_cast<int>(std::min<int64_t>({N, static_cast<int64_t>(std::max(1, per_sm)) * sms, backward_blocks(N)}));
}

}  // namespace

void residual_rmsnorm_forward(bf16* resid_out, bf16* norm_out, float* rstd, const bf16* a,
                              const bf16* b, const bf16* w, int64_t N, int64_t D, float eps,
                              cudaStream_t stream) {
  if (N == 0) return;
  const bool vec = D % 8 == 0 && aligned16(a) && aligned16(norm_out) && aligned16(w) &&
                   (!b || (aligned16(b) && aligned16(resid_out)));
  if (vec)
    residual_rmsnorm_forward_kernel<true><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
        resid_out, norm_out, rstd, a, b, w, D, eps);
  else
    residual_rmsnorm_forward_kernel<false><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
        resid_out, norm_out, rstd, a, b, w, D, eps);
  CUDA_CHECK_LAUNCH();
}

size_t rmsnorm_backward_scratch_floats(int64_t N, int64_t D) {
  return static_cast<size_t>(backward_blocks(N)) * static_cast<size_t>(D);
}

void rmsnorm_backward(bf16* dx, const GradOut& dw, float* scratch, const bf16* dout, const bf16* x,
                      const bf16* w, const float* rstd, int64_t N, int64_t D, bool accumulate,
                      cudaStream_t stream) {
  if (N == 0) return;
  const int blocks = backward_blocks(N);
  const bool vec = D % 8 == 0 && aligned16(dx) && aligned16(dout) && aligned16(x) && aligned16(w);
  if (vec && D <= 8 * 1024) {
    // D/8 threads rounded up to whole warps.
    const int threads = static_cast<int>(std::min<int64_t>(1024, (D / 8 + 31) / 32 * 32));
    if (tma_backward_fits(D, accumulate)) {
      const int stages = tma_backward_stages(D, accumulate);
      const size_t smem = kTmaBarrierBytes + static_cast<size_t>(stages) * (accumulate ? 3 : 2) * D * sizeof(bf16);
      const int tma_blocks = tma_backward_blocks(N, D, accumulate, threads, smem);
      if (accumulate)
        rmsnorm_backward_tma_kernel<true><<<tma_blocks, threads, smem, stream>>>(dx, scratch, dout, x, w, rstd, N,
                                                                                  D, stages);
      else
        rmsnorm_backward_tma_kernel<false><<<tma_blocks, threads, smem, stream>>>(dx, scratch, dout, x, w, rstd, N,
                                                                                   D, stages);
      CUDA_CHECK_LAUNCH();
      reduce_partials(dw, scratch, tma_blocks, D, stream);
      return;
    }
    rmsnorm_backward_vec_kernel<<<blocks, threads, 0, stream>>>(dx, scratch, dout, x, w, rstd, N, D, accumulate);
    CUDA_CHECK_LAUNCH();
    reduce_partials(dw, scratch, blocks, D, stream);
    return;
  }
  const size_t smem = sizeof(float) * static_cast<size_t>(D);
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(rmsnorm_backward_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  rmsnorm_backward_kernel<<<blocks, kThreads, smem, stream>>>(dx, scratch, dout, x, w, rstd, N, D,
                                                              accumulate);
  CUDA_CHECK_LAUNCH();
  reduce_partials(dw, scratch, blocks, D, stream);
}

}  // namespace intellect::cuda
