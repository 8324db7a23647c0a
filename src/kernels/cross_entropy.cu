// The fused classifier loss on the GPU: softmax cross-entropy + max-z-loss,
// forward and backward in place over bf16 logits [N, V]. Probabilities are
// never stored: each row's max, arg-max and Σ exp(x − max) are found first,
// then the logits are overwritten with dlogits.
//
// Floor, at bench_step's chunk (2093 rows × V = 128256 = 268 M logits):
// reading each bf16 logit once and writing its bf16 gradient once is 4 bytes a
// logit, 1.07 GB, 0.256 ms at 4.2 TB/s copy bandwidth. Reading the row twice
// (6 bytes a logit) has a floor of 0.383 ms.
//
// Two kernels; the launcher picks.
// - Rowwise (the fallback): one 512-thread block per row; pass 1 an online
//   max/arg-max/sum sweep, pass 2 re-reads the row and writes dlogits. It was
//   meant to find the row (256 KB) in L2 for pass 2, but with ~4 blocks per SM
//   × 132 SMs, ~130 MB of rows are in flight against a 50 MB L2: measured
//   0.418 ms on the H200, 92% of the 6-byte floor: consistent with the row
//   coming from DRAM twice. (Staging it in shared memory instead: 0.447 ms.)
// - Cluster: the row is held in registers, so it is read from DRAM once. A row
//   is 250.5 KB of bf16 and an SM has 256 KB of registers, so one block cannot
//   hold it: a thread-block cluster of C = ⌈V / 32768⌉ blocks (4 at 128256)
//   splits it, each of 512 threads holding 8 16-byte vectors (32 registers,
//   64 in all under the launch bounds, so 2 blocks and half a row per SM).
//   The blocks merge their (max, lowest arg-max, sum) through distributed
//   shared memory, in rank order, so all of them compute the same
//   log-sum-exp, then write dlogits from their registers. Each logit costs two
//   exponentials (MUFU: 16 per clock per SM): 537 M / (132 × 16 × 1.98 GHz)
//   = 0.13 ms, half the floor, so the blocks in their arithmetic phases must
//   overlap others' memory phases; 2 blocks per SM is the most the registers
//   allow.
#include <cooperative_groups.h>

#include "kernels/cross_entropy.h"

#include <atomic>
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

// ---- the cluster kernel ----------------------------------------------------

constexpr int kClusterThreads = 512;
constexpr int kVecsPerThread = 8;  // 16-byte vectors held in registers: 32 registers
constexpr int kVecsPerBlock = kClusterThreads * kVecsPerThread;
constexpr int kMaxCluster = 8;  // the portable cluster size
static_assert(kClusterMaxVocab == int64_t(kMaxCluster) * kVecsPerBlock * 8, "cross_entropy.h's bound is this kernel's");

constexpr float kLog2e = 1.4426950408889634f;

// A thread's part of the row: kVecsPerThread vectors of 8 bf16, as 32-bit
// words of two (element 2q in the low half, 2q + 1 in the high half).
using Words = uint32_t[kVecsPerThread][4];

__device__ __forceinline__ float lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ __nv_bfloat162 pair(uint32_t w) { return *reinterpret_cast<__nv_bfloat162*>(&w); }

// 2^x by the special-function unit (what __expf uses after its multiply),
// the log2(e) scale folded into the caller's FMA.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Block b of a row's cluster holds vectors [b·kVecsPerBlock, (b+1)·kVecsPerBlock)
// of it; thread t holds vectors t, t + 512, ...: each load and store of the
// block is one coalesced 8 KB sweep. Past the row's end a vector is −∞, which
// neither the max nor the sum sees.
__global__ void __launch_bounds__(kClusterThreads, 2)
    cross_entropy_cluster_kernel(bf16* logits, float* row_ce, float* row_z, float* logits_f32,
                                 const int32_t* targets, int64_t V, float z_weight, float grad_scale) {
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  const int blocks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t row = blockIdx.x / blocks;
  // Indices within the row fit 32 bits (V ≤ kClusterMaxVocab): fewer registers.
  const int n_vecs = static_cast<int>(V / 8);
  const int first = rank * kVecsPerBlock + static_cast<int>(threadIdx.x);  // vector index of x[0]
  bf16* l = logits + row * V;
  float* lf = logits_f32 ? logits_f32 + row * V : nullptr;
  const int32_t target = targets[row];  // the same in every block of the cluster: they branch alike

  auto valid = [&](int j) { return first + j * kClusterThreads < n_vecs; };
  auto at = [&](int j) { return (first + j * kClusterThreads) * 8; };  // the logit index of x[j]'s first
  Words x;
  if (target >= 0 || lf) {
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j) {
      constexpr uint32_t kNegInf2 = 0xff80ff80u;  // two bf16 −∞
      const uint4 v = valid(j) ? *reinterpret_cast<const uint4*>(l + at(j))
                               : make_uint4(kNegInf2, kNegInf2, kNegInf2, kNegInf2);
      x[j][0] = v.x, x[j][1] = v.y, x[j][2] = v.z, x[j][3] = v.w;
    }
  }
  if (lf) {
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j) {
      if (!valid(j)) continue;
      float4* o = reinterpret_cast<float4*>(lf + at(j));
      o[0] = make_float4(lo(x[j][0]), hi(x[j][0]), lo(x[j][1]), hi(x[j][1]));
      o[1] = make_float4(lo(x[j][2]), hi(x[j][2]), lo(x[j][3]), hi(x[j][3]));
    }
  }
  if (target < 0) {  // ignored row: no loss, zero gradient, no statistics to share
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j)
      if (valid(j)) *reinterpret_cast<uint4*>(l + at(j)) = make_uint4(0, 0, 0, 0);
    if (rank == 0 && threadIdx.x == 0) row_ce[row] = row_z[row] = 0.0f;
    return;
  }

  // This thread's max (on bf16 pairs: exact), the lowest index holding it,
  // then Σ exp(x − max): one exponential per logit.
  __nv_bfloat162 m2 = pair(x[0][0]);
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j)
#pragma unroll
    for (int q = 0; q < 4; ++q) m2 = __hmax2(m2, pair(x[j][q]));
  const float m = fmaxf(__low2float(m2), __high2float(m2));
  const __nv_bfloat162 mm = __float2bfloat162_rn(m);
  int mi = INT32_MAX;
#pragma unroll
  for (int j = kVecsPerThread - 1; j >= 0; --j)  // backwards: the last match found is the lowest
#pragma unroll
    for (int q = 3; q >= 0; --q) {
      const unsigned eq = __heq2_mask(pair(x[j][q]), mm);
      if (eq) mi = at(j) + 2 * q + ((eq & 0xffffu) ? 0 : 1);
    }
  float sum = 0.0f;
  if (m != -INFINITY) {
    const float mb = m * kLog2e;
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q)
        sum += exp2_approx(fmaf(lo(x[j][q]), kLog2e, -mb)) + exp2_approx(fmaf(hi(x[j][q]), kLog2e, -mb));
  }
  __shared__ RowStats scratch[32];
  __shared__ RowStats block_stats;
  const RowStats mine = block_merge(RowStats{m, mi == INT32_MAX ? INT64_MAX : mi, sum}, scratch);
  if (threadIdx.x == 0) block_stats = mine;

  // The threads that need the target's logit read it before the barrier: no
  // block of the cluster writes a gradient until every block has arrived.
  const int target_vec = target / 8;
  const bool owns_target = rank == target_vec / kVecsPerBlock && threadIdx.x == target_vec % kClusterThreads;
  const bool writes_loss = rank == 0 && threadIdx.x == 0;
  const float target_logit = owns_target || writes_loss ? __bfloat162float(l[target]) : 0.0f;

  cluster.sync();  // every block's statistics are in its shared memory
  RowStats st{-INFINITY, INT64_MAX, 0.0f};
  for (int b = 0; b < blocks; ++b) st = merge(st, *cluster.map_shared_rank(&block_stats, b));
  cluster.barrier_arrive();  // done reading the others' shared memory

  const float lse = st.m + logf(st.s);
  const float lse2 = lse * kLog2e;
  auto prob = [&](float f) { return exp2_approx(fmaf(f, kLog2e, -lse2)) * grad_scale; };
  // The bulk of the row: exp(x − lse)·grad_scale. The target's and the
  // arg-max's entries get their extra terms below, stored after the vector
  // holding them and by the same thread, so the later store wins.
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    if (!valid(j)) continue;
    uint4 v;
    uint32_t* w = &v.x;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const __nv_bfloat162 d = __floats2bfloat162_rn(prob(lo(x[j][q])), prob(hi(x[j][q])));
      w[q] = *reinterpret_cast<const uint32_t*>(&d);
    }
    *reinterpret_cast<uint4*>(l + at(j)) = v;
  }
  const float zgrad = 2.0f * z_weight * st.m * grad_scale;
  auto grad = [&](int64_t i, float f) {  // the rowwise kernel's formula, entry by entry
    float d = prob(f);
    if (i == target) d -= grad_scale;
    if (i == st.i) d += zgrad;
    return __float2bfloat16(d);
  };
  if (owns_target) l[target] = grad(target, target_logit);
  const int argmax_vec = static_cast<int>(st.i / 8);
  if (st.i != target && rank == argmax_vec / kVecsPerBlock && threadIdx.x == argmax_vec % kClusterThreads)
    l[st.i] = grad(st.i, st.m);
  if (writes_loss) {
    row_ce[row] = lse - target_logit;
    row_z[row] = st.m * st.m;
  }
  cluster.barrier_wait();  // no block leaves while another may still read its shared memory
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

void cross_entropy_forward_backward_rowwise(bf16* logits, float* row_ce, float* row_z,
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

namespace {
std::atomic<bool> cluster_allowed{true};
}  // namespace

void allow_cluster_cross_entropy(bool allowed) { cluster_allowed.store(allowed); }
bool cluster_cross_entropy_allowed() { return cluster_allowed.load(); }

CrossEntropyKernel cross_entropy_kernel_for(int64_t N, int64_t V, const bf16* logits,
                                            const float* logits_f32) {
  if (!cluster_allowed.load()) return CrossEntropyKernel::kRowwise;
  const int64_t blocks = (V + kVecsPerBlock * 8 - 1) / (kVecsPerBlock * 8);
  const bool fits = V > 0 && V % 8 == 0 && V <= kClusterMaxVocab && N * blocks <= INT32_MAX;
  const bool aligned = aligned16(logits) && (!logits_f32 || aligned16(logits_f32));
  return fits && aligned ? CrossEntropyKernel::kCluster : CrossEntropyKernel::kRowwise;
}

void cross_entropy_forward_backward(bf16* logits, float* row_ce, float* row_z,
                                    float* logits_f32, const int32_t* targets, int64_t N,
                                    int64_t V, float z_weight, float grad_scale,
                                    cudaStream_t stream) {
  if (N == 0) return;
  if (cross_entropy_kernel_for(N, V, logits, logits_f32) == CrossEntropyKernel::kRowwise)
    return cross_entropy_forward_backward_rowwise(logits, row_ce, row_z, logits_f32, targets, N, V,
                                                  z_weight, grad_scale, stream);
  const unsigned blocks = static_cast<unsigned>((V + kVecsPerBlock * 8 - 1) / (kVecsPerBlock * 8));
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = blocks;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(N) * blocks);
  config.blockDim = dim3(kClusterThreads);
  config.stream = stream;
  config.attrs = &cluster;
  config.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&config, cross_entropy_cluster_kernel, logits, row_ce, row_z, logits_f32,
                                targets, V, z_weight, grad_scale));
}

void accumulate_loss(double* sums, const float* row_ce, const float* row_z, const int32_t* targets,
                     int64_t N, cudaStream_t stream) {
  accumulate_loss_kernel<<<1, 1024, 0, stream>>>(sums, row_ce, row_z, targets, N);
  CUDA_CHECK_LAUNCH();
}

}  // namespace intellect::cuda
