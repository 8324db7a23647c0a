// The fused classifier loss on the GPU: one block per row of bf16 logits.
// Pass 1 finds the max, its index and the sum of exponentials in one online
// sweep; pass 2 overwrites the logits with dlogits. Probabilities are never
// stored; the row (256 KB at V = 128256) stays in L2 between the passes.
// DRAM floor: read V logits and write V dlogits: 4 bytes per element.
#include "kernels/cross_entropy.h"
#include "kernels/cuda_common.cuh"

namespace intellect::cuda {

namespace {

constexpr int kThreads = 512;

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

template <bool kVec>
__global__ void cross_entropy_kernel(bf16* logits, float* row_ce, float* row_z, float* logits_f32,
                                     const int32_t* targets, int64_t V, float z_weight,
                                     float grad_scale) {
  __shared__ RowStats stats_scratch[32];
  const int64_t row = blockIdx.x;
  bf16* l = logits + row * V;
  const int32_t target = targets[row];
  float* lf = logits_f32 ? logits_f32 + row * V : nullptr;

  // Pass 1: max, arg-max and the sum of exponentials, online.
  RowStats st{-INFINITY, INT64_MAX, 0.0f};
  if constexpr (kVec) {
    for (int64_t i = threadIdx.x * 8; i < V; i += blockDim.x * 8) {
      const Bf16x8 x = load8(l + i);
      float f[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        f[k] = __bfloat162float(x.v[k]);
        if (lf) lf[i + k] = f[k];
      }
      absorb(st, f, i);
    }
  } else {
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float f[1] = {__bfloat162float(l[i])};
      if (lf) lf[i] = f[0];
      absorb(st, f, i);
    }
  }
  st = block_merge(st, stats_scratch);

  if (target < 0) {  // ignored row: no loss, zero gradient
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) l[i] = __float2bfloat16(0.0f);
    if (threadIdx.x == 0) row_ce[row] = row_z[row] = 0.0f;
    return;
  }
  const float lse = st.m + logf(st.s);
  const float target_logit = __bfloat162float(l[target]);
  __syncthreads();  // every thread has read l[target] before it is overwritten
  if (threadIdx.x == 0) {
    row_ce[row] = lse - target_logit;
    row_z[row] = st.m * st.m;
  }
  // Pass 2: overwrite the logits with their gradient.
  const float zgrad = 2.0f * z_weight * st.m * grad_scale;
  auto grad = [&](int64_t i, float f) {
    float d = __expf(f - lse) * grad_scale;
    if (i == target) d -= grad_scale;
    if (i == st.i) d += zgrad;
    return __float2bfloat16(d);
  };
  if constexpr (kVec) {
    for (int64_t i = threadIdx.x * 8; i < V; i += blockDim.x * 8) {
      Bf16x8 x = load8(l + i);
#pragma unroll
      for (int k = 0; k < 8; ++k) x.v[k] = grad(i + k, __bfloat162float(x.v[k]));
      store8(l + i, x);
    }
  } else {
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) l[i] = grad(i, __bfloat162float(l[i]));
  }
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
  if (V % 8 == 0 && aligned16(logits))
    cross_entropy_kernel<true><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
        logits, row_ce, row_z, logits_f32, targets, V, z_weight, grad_scale);
  else
    cross_entropy_kernel<false><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
        logits, row_ce, row_z, logits_f32, targets, V, z_weight, grad_scale);
  CUDA_CHECK_LAUNCH();
}

void accumulate_loss(double* sums, const float* row_ce, const float* row_z, const int32_t* targets,
                     int64_t N, cudaStream_t stream) {
  accumulate_loss_kernel<<<1, 1024, 0, stream>>>(sums, row_ce, row_z, targets, N);
  CUDA_CHECK_LAUNCH();
}

}  // namespace intellect::cuda
