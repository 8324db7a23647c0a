// The fused classifier loss on the GPU: one block per row of bf16 logits.
// Pass 1 finds the max, its index and the sum of exponentials in one online
// sweep; pass 2 overwrites the logits with dlogits. Probabilities are never
// stored. DRAM floor: read V logits and write V dlogits: 4 bytes per element.
//
// Path to the floor (bench_step's kernel table, 2048 rows of V = 128256):
// 1. 512 threads a block, pass 2 re-reading the row "from L2": 61% of copy
//    bandwidth. Four blocks an SM keep 132 × 4 rows of 256 KB live, 135 MB,
//    more than the 50 MB L2, so pass 2 mostly re-read DRAM.
// 2. One block of 1024 threads an SM, the first 192 KB of the row kept in
//    shared memory by pass 1 and read back by pass 2; the row's tail (64 KB,
//    8 MB over the GPU) stays in L2. Pass 1 issues two 16-byte loads a
//    thread before using either, to keep enough bytes in flight per SM.
#include "kernels/cross_entropy.h"

#include <algorithm>

#include "kernels/cuda_common.cuh"

namespace intellect::cuda {

namespace {

constexpr int kThreads = 512;       // the scalar path
constexpr int kVecThreads = 1024;   // the vector path: one block an SM
constexpr int kCacheBytes = 192 * 1024;

// Running softmax statistics of part of a row: max, its (lowest) index, and
// Σ exp(x − max). Two of them merge exactly, so one pass gives all three.
struct RowStats {
  float m;
  int64_t i;
  float s;
};

__device__ __forceinline__ RowStats merge(RowStats a, RowStats b) {
  if (b.m == -INFINITY) return a;
  if (a.m == -INFINITY) return b;
  const float m = fmaxf(a.m, b.m);
  RowStats r;
  r.m = m;
  r.s = a.s * __expf(a.m - m) + b.s * __expf(b.m - m);
  r.i = (b.m > a.m || (b.m == a.m && b.i < a.i)) ? b.i : a.i;
  return r;
}

__device__ RowStats block_merge(RowStats x, RowStats* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    RowStats other{__shfl_xor_sync(0xffffffffu, x.m, o), __shfl_xor_sync(0xffffffffu, x.i, o),
                   __shfl_xor_sync(0xffffffffu, x.s, o)};
    x = merge(x, other);
  }
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : RowStats{-INFINITY, INT64_MAX, 0.0f};
  for (int o = 16; o > 0; o >>= 1) {
    RowStats other{__shfl_xor_sync(0xffffffffu, x.m, o), __shfl_xor_sync(0xffffffffu, x.i, o),
                   __shfl_xor_sync(0xffffffffu, x.s, o)};
    x = merge(x, other);
  }
  return x;
}

// Adds a chunk of values to running stats: the chunk's max first, so each
// element costs one exponential.
template <int K>
__device__ __forceinline__ void absorb(RowStats& st, const float (&f)[K], int64_t base) {
  float cm = f[0];
  int64_t ci = base;
#pragma unroll
  for (int k = 1; k < K; ++k)
    if (f[k] > cm) cm = f[k], ci = base + k;
  float cs = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) cs += __expf(f[k] - cm);
  st = merge(st, RowStats{cm, ci, cs});
}

// The gradient of one logit: softmax − one-hot target, plus max-z-loss's term
// at the arg-max, scaled.
struct GradOfLogit {
  float lse, grad_scale, zgrad;
  int64_t target, argmax;
  __device__ __forceinline__ bf16 operator()(int64_t i, float f) const {
    float d = __expf(f - lse) * grad_scale;
    if (i == target) d -= grad_scale;
    if (i == argmax) d += zgrad;
    return __float2bfloat16(d);
  }
};

// After pass 1: the row's loss terms, and its gradient function. Every thread
// must have read l[target] before pass 2 overwrites it (the caller syncs).
__device__ __forceinline__ GradOfLogit finish_row(const RowStats& st, const bf16* l, int32_t target, int64_t row,
                                                  float* row_ce, float* row_z, float z_weight, float grad_scale) {
  const float lse = st.m + logf(st.s);
  const float target_logit = __bfloat162float(l[target]);
  if (threadIdx.x == 0) {
    row_ce[row] = lse - target_logit;
    row_z[row] = st.m * st.m;
  }
  return GradOfLogit{lse, grad_scale, 2.0f * z_weight * st.m * grad_scale, target, st.i};
}

// V % 8 == 0 and 16-byte aligned rows; `cached` of the row's vectors stay in
// shared memory between the passes (dynamic shared memory: cached × 16 bytes).
__global__ void __launch_bounds__(kVecThreads, 1)
    cross_entropy_vec_kernel(bf16* logits, float* row_ce, float* row_z, float* logits_f32,
                             const int32_t* targets, int64_t V, int64_t cached, float z_weight, float grad_scale) {
  extern __shared__ Bf16x8 cache[];
  __shared__ RowStats stats_scratch[32];
  const int64_t row = blockIdx.x, vecs = V / 8;
  bf16* l = logits + row * V;
  const int32_t target = targets[row];
  float* lf = logits_f32 ? logits_f32 + row * V : nullptr;

  RowStats st{-INFINITY, INT64_MAX, 0.0f};
  auto take = [&](int64_t j, const Bf16x8& x) {
    if (j < cached) cache[j] = x;
    float f[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      f[k] = __bfloat162float(x.v[k]);
      if (lf) lf[j * 8 + k] = f[k];
    }
    absorb(st, f, j * 8);
  };
  int64_t j = threadIdx.x;
  for (; j + kVecThreads < vecs; j += 2 * kVecThreads) {
    const Bf16x8 a = load8(l + j * 8), b = load8(l + (j + kVecThreads) * 8);
    take(j, a);
    take(j + kVecThreads, b);
  }
  if (j < vecs) take(j, load8(l + j * 8));
  st = block_merge(st, stats_scratch);

  if (target < 0) {  // ignored row: no loss, zero gradient
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) l[i] = __float2bfloat16(0.0f);
    if (threadIdx.x == 0) row_ce[row] = row_z[row] = 0.0f;
    return;
  }
  const GradOfLogit grad = finish_row(st, l, target, row, row_ce, row_z, z_weight, grad_scale);
  __syncthreads();  // every thread has read l[target] before it is overwritten
  for (j = threadIdx.x; j < vecs; j += kVecThreads) {
    Bf16x8 x = j < cached ? cache[j] : load8(l + j * 8);
#pragma unroll
    for (int k = 0; k < 8; ++k) x.v[k] = grad(j * 8 + k, __bfloat162float(x.v[k]));
    store8(l + j * 8, x);
  }
}

__global__ void cross_entropy_kernel(bf16* logits, float* row_ce, float* row_z, float* logits_f32,
                                     const int32_t* targets, int64_t V, float z_weight, float grad_scale) {
  __shared__ RowStats stats_scratch[32];
  const int64_t row = blockIdx.x;
  bf16* l = logits + row * V;
  const int32_t target = targets[row];
  float* lf = logits_f32 ? logits_f32 + row * V : nullptr;

  // Pass 1: max, arg-max and the sum of exponentials, online.
  RowStats st{-INFINITY, INT64_MAX, 0.0f};
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float f[1] = {__bfloat162float(l[i])};
    if (lf) lf[i] = f[0];
    absorb(st, f, i);
  }
  st = block_merge(st, stats_scratch);

  if (target < 0) {  // ignored row: no loss, zero gradient
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) l[i] = __float2bfloat16(0.0f);
    if (threadIdx.x == 0) row_ce[row] = row_z[row] = 0.0f;
    return;
  }
  const GradOfLogit grad = finish_row(st, l, target, row, row_ce, row_z, z_weight, grad_scale);
  __syncthreads();  // every thread has read l[target] before it is overwritten
  // Pass 2: overwrite the logits with their gradient.
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) l[i] = grad(i, __bfloat162float(l[i]));
}

__global__ void accumulate_loss_kernel(double* sums, const float* row_ce, const float* row_z,
                                       const int32_t* targets, int64_t N) {
  __shared__ double s_ce[1024], s_z[1024], s_n[1024];
  double ce = 0.0, z = 0.0, n = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    if (targets[i] < 0) continue;
    ce += row_ce[i];
    z += row_z[i];
    n += 1.0;
  }
  s_ce[threadIdx.x] = ce;
  s_z[threadIdx.x] = z;
  s_n[threadIdx.x] = n;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) {
      s_ce[threadIdx.x] += s_ce[threadIdx.x + w];
      s_z[threadIdx.x] += s_z[threadIdx.x + w];
      s_n[threadIdx.x] += s_n[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sums[0] += s_ce[0];
    sums[1] += s_z[0];
    sums[2] += s_n[0];
  }
}

}  // namespace

void cross_entropy_forward_backward(bf16* logits, float* row_ce, float* row_z,
                                    float* logits_f32, const int32_t* targets, int64_t N,
                                    int64_t V, float z_weight, float grad_scale,
                                    cudaStream_t stream) {
  if (N == 0) return;
  if (V % 8 == 0 && aligned16(logits)) {
    const int64_t cached = std::min<int64_t>(V / 8, kCacheBytes / static_cast<int64_t>(sizeof(Bf16x8)));
    const size_t smem = static_cast<size_t>(cached) * sizeof(Bf16x8);
    // Per launch: the attribute belongs to the current device's context, and
    // FSDP's ranks drive several devices (a host call, not a synchronisation).
    CUDA_CHECK(cudaFuncSetAttribute(cross_entropy_vec_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
    cross_entropy_vec_kernel<<<static_cast<unsigned>(N), kVecThreads, smem, stream>>>(
        logits, row_ce, row_z, logits_f32, targets, V, cached, z_weight, grad_scale);
  } else {
    cross_entropy_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream>>>(logits, row_ce, row_z, logits_f32,
                                                                           targets, V, z_weight, grad_scale);
  }
  CUDA_CHECK_LAUNCH();
}

void accumulate_loss(double* sums, const float* row_ce, const float* row_z, const int32_t* targets,
                     int64_t N, cudaStream_t stream) {
  accumulate_loss_kernel<<<1, 1024, 0, stream>>>(sums, row_ce, row_z, targets, N);
  CUDA_CHECK_LAUNCH();
}

}  // namespace intellect::cuda
