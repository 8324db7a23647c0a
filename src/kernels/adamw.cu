// AdamW over the whole flat parameter buffer in one cooperative launch:
//   phase 1: each block sums g² over its grid-stride share → partial[block]
//   grid sync
//   phase 2: every block reduces the partials in block order (same value in
//            every block, deterministic), derives the clip factor, and updates
//            its share: m, v, then the weight (fp32 master, or the bf16 weight
//            itself with stochastic rounding).
// DRAM floor per element: g read twice (8 B fp32 or 4 B bf16) + bf16 weight
// r/w (4 B) + m, v r/w (16 B fp32 or 8 B bf16) + master r/w (8 B when present).
#include <cooperative_groups.h>

#include <algorithm>

#include "kernels/adamw.h"
#include "kernels/cuda_common.cuh"

namespace intellect::cuda {

namespace cg = cooperative_groups;

namespace {

constexpr int kThreads = 512;
constexpr int kMaxBlocks = 1024;

// 32-bit mixing (murmur3's finaliser) of the element index and the step's
// seed: 64-bit multiplies are several instructions each on the GPU, and this
// runs once per parameter per step.
__device__ __forceinline__ uint32_t hash32(uint64_t seed, uint64_t i) {
  uint32_t x = static_cast<uint32_t>(i) ^ (static_cast<uint32_t>(i >> 32) * 0x9E3779B9u) ^
               static_cast<uint32_t>(seed) ^ (static_cast<uint32_t>(seed >> 32) * 0x85EBCA77u);
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

// Unbiased rounding of an fp32 value to bf16: add random low bits, truncate.
__device__ __forceinline__ bf16 stochastic_round(float x, uint32_t r) {
  uint32_t bits = __float_as_uint(x);
  if ((bits & 0x7f800000u) == 0x7f800000u) return __float2bfloat16(x);  // inf/nan as they are
  bits += (r & 0xffffu);
  bits &= 0xffff0000u;
  return __float2bfloat16_rz(__uint_as_float(bits));
}

template <typename S>
__device__ __forceinline__ float load_state(const S* p, int64_t i) {
  if constexpr (sizeof(S) == 4) return p[i];
  else return __bfloat162float(p[i]);
}
template <typename S>
__device__ __forceinline__ void store_state(S* p, int64_t i, float x) {
  if constexpr (sizeof(S) == 4) p[i] = x;
  else p[i] = __float2bfloat16(x);
}

// Index of the range holding element i (bounds are few and cached).
__device__ __forceinline__ int find_range(const int64_t* bounds, int n, int64_t i) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (bounds[mid] <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The per-element AdamW update, shared by the vector and the tail paths.
template <typename S>
__device__ __forceinline__ void update_one(bf16* params, float* master, S* m, S* v, int64_t i, float g,
                                           float wd, const AdamWArgs& a, float step_size,
                                           float inv_bc2_sqrt) {
  const float mi = a.beta1 * load_state(m, i) + (1.0f - a.beta1) * g;
  const float vi = a.beta2 * load_state(v, i) + (1.0f - a.beta2) * g * g;
  store_state(m, i, mi);
  store_state(v, i, vi);
  const float w = master ? master[i] : __bfloat162float(params[i]);
  const float updated = w * (1.0f - a.lr * wd) - step_size * __fdividef(mi, sqrtf(vi) * inv_bc2_sqrt + a.eps);
  if (master) {
    master[i] = updated;
    params[i] = __float2bfloat16(updated);
  } else {
    params[i] = stochastic_round(updated, hash32(a.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(a.step), i));
  }
}

// Four consecutive values as one access: 16 bytes of fp32 or 8 bytes of bf16.
struct alignas(8) Bf16x4 {
  bf16 v[4];
};
__device__ __forceinline__ void load4(const float* p, int64_t i, float out[4]) {
  const float4 x = *reinterpret_cast<const float4*>(p + i);
  out[0] = x.x, out[1] = x.y, out[2] = x.z, out[3] = x.w;
}
__device__ __forceinline__ void load4(const bf16* p, int64_t i, float out[4]) {
  const Bf16x4 x = *reinterpret_cast<const Bf16x4*>(p + i);
#pragma unroll
  for (int k = 0; k < 4; ++k) out[k] = __bfloat162float(x.v[k]);
}
__device__ __forceinline__ void store4(float* p, int64_t i, const float x[4]) {
  *reinterpret_cast<float4*>(p + i) = make_float4(x[0], x[1], x[2], x[3]);
}

// Eight consecutive values as wide loads: one 16-byte access of bf16, two of fp32.
__device__ __forceinline__ void load8f(const float* p, int64_t i, float out[8]) {
  load4(p, i, out);
  load4(p, i + 4, out + 4);
}
__device__ __forceinline__ void load8f(const bf16* p, int64_t i, float out[8]) {
  const Bf16x8 x = load8(p + i);
#pragma unroll
  for (int k = 0; k < 8; ++k) out[k] = __bfloat162float(x.v[k]);
}
__device__ __forceinline__ void store8f(float* p, int64_t i, const float x[8]) {
  store4(p, i, x);
  store4(p, i + 4, x + 4);
}
__device__ __forceinline__ void store8f(bf16* p, int64_t i, const float x[8]) {
  Bf16x8 o;
#pragma unroll
  for (int k = 0; k < 8; ++k) o.v[k] = __float2bfloat16(x[k]);
  store8(p + i, o);
}

// The update of elements [begin, end) by this thread's share of the grid,
// clip factor `scale` already derived: eight elements at a time between the
// first and last multiples of eight (16-byte loads of every bf16 array, two of
// every fp32 one: with 8-byte loads the bf16 update reached 77% of copy
// bandwidth), the rest one by one. Shared by the one-launch step and the
// per-range update.
template <typename S, typename G>
__device__ __forceinline__ void update_span(bf16* __restrict__ params, float* __restrict__ master,
                                            const G* __restrict__ grads, S* __restrict__ m, S* __restrict__ v,
                                            int64_t begin, int64_t end, const DecayRanges& ranges,
                                            const AdamWArgs& a, float scale) {
  constexpr int W = 8;
  const float bc1 = 1.0f - powf(a.beta1, static_cast<float>(a.step));
  // Fast division and a reciprocal: precise IEEE division would make this
  // memory-bound kernel compute-bound; the update tolerates 2 ulp.
  const float inv_bc2_sqrt = rsqrtf(1.0f - powf(a.beta2, static_cast<float>(a.step)));
  const float step_size = a.lr / bc1;
  const uint64_t seed = a.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(a.step);
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  // Elements before the first multiple of W, and after the last, one by one.
  const int64_t vbegin = std::min(end, (begin + W - 1) / W * W), vend = std::max(vbegin, end / W * W);
  for (int64_t i = begin + first; i < vbegin; i += threads) {
    const int rk = find_range(ranges.bounds, ranges.n, i);
    update_one(params, master, m, v, i, load_state(grads, i) * scale, ranges.decay[rk] ? a.weight_decay : 0.0f, a,
               step_size, inv_bc2_sqrt);
  }
  for (int64_t i = vend + first; i < end; i += threads) {
    const int rk = find_range(ranges.bounds, ranges.n, i);
    update_one(params, master, m, v, i, load_state(grads, i) * scale, ranges.decay[rk] ? a.weight_decay : 0.0f, a,
               step_size, inv_bc2_sqrt);
  }
  int r = find_range(ranges.bounds, ranges.n, vbegin < vend ? vbegin : 0);
  for (int64_t i = vbegin + W * first; i < vend; i += W * threads) {
    if (i >= ranges.bounds[r + 1] || i < ranges.bounds[r]) r = find_range(ranges.bounds, ranges.n, i);
    float gs[W];
    load8f(grads, i, gs);
#pragma unroll
    for (int k = 0; k < W; ++k) gs[k] *= scale;
    if (i + W - 1 >= ranges.bounds[r + 1]) {  // straddles a decay boundary: element by element
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const int rk = find_range(ranges.bounds, ranges.n, i + k);
        update_one(params, master, m, v, i + k, gs[k], ranges.decay[rk] ? a.weight_decay : 0.0f, a, step_size,
                   inv_bc2_sqrt);
      }
      continue;
    }
    const float decay = 1.0f - a.lr * (ranges.decay[r] ? a.weight_decay : 0.0f);
    float mi[W], vi[W], w[W];
    load8f(m, i, mi);
    load8f(v, i, vi);
    if (master) load8f(master, i, w);
    else load8f(params, i, w);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      mi[k] = a.beta1 * mi[k] + (1.0f - a.beta1) * gs[k];
      vi[k] = a.beta2 * vi[k] + (1.0f - a.beta2) * gs[k] * gs[k];
      w[k] = w[k] * decay - step_size * __fdividef(mi[k], sqrtf(vi[k]) * inv_bc2_sqrt + a.eps);
    }
    store8f(m, i, mi);
    store8f(v, i, vi);
    if (master) {
      store8f(master, i, w);
      store8f(params, i, w);
    } else {
      Bf16x8 o;
#pragma unroll
      for (int k = 0; k < W; ++k) o.v[k] = stochastic_round(w[k], hash32(seed, i + k));
      store8(params + i, o);
    }
  }
}

// Elements are taken four at a time (16-byte gradient loads); the last n % 4
// by the first threads.
template <typename S, typename G>
__global__ void __launch_bounds__(kThreads) adamw_kernel(bf16* __restrict__ params,
                                                         float* __restrict__ master,
                                                         const G* __restrict__ grads,
                                                         S* __restrict__ m, S* __restrict__ v, int64_t n,
                                                         DecayRanges ranges, AdamWArgs a,
                                                         float* norm_out, float* partial,
                                                         const float* sum_squares_in) {
  cg::grid_group grid = cg::this_grid();
  __shared__ float scratch[32];
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t n4 = n / 4;

  // A sharded optimizer passes the Σg² of all shards (already all-reduced);
  // the flag is the same for the whole grid, so grid.sync() stays uniform.
  if (sum_squares_in == nullptr) {
    float ss = 0.0f;
    for (int64_t q = first; q < n4; q += threads) {
      float g[4];
      load4(grads, 4 * q, g);
      ss += g[0] * g[0] + g[1] * g[1] + g[2] * g[2] + g[3] * g[3];
    }
    for (int64_t i = 4 * n4 + first; i < n; i += threads) {
      const float g = load_state(grads, i);
      ss += g * g;
    }
    ss = block_sum(ss, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = ss;
    grid.sync();
  }

  __shared__ float s_scale;
  if (threadIdx.x == 0) {
    double total = 0.0;
    if (sum_squares_in) total = *sum_squares_in;
    else
      for (unsigned b = 0; b < gridDim.x; ++b) total += partial[b];
    const float norm = static_cast<float>(sqrt(total));
    if (blockIdx.x == 0) *norm_out = norm;
    s_scale = (a.max_norm > 0.0f && norm > a.max_norm) ? a.max_norm / (norm + 1e-6f) : 1.0f;
  }
  __syncthreads();
  const float scale = s_scale;
  update_span(params, master, grads, m, v, 0, n, ranges, a, scale);
}

template <typename S, typename G>
void launch(bf16* params, float* master, const G* grads, void* m, void* v, int64_t n,
            const DecayRanges& ranges, const AdamWArgs& args, float* norm_out, float* scratch,
            const float* sum_squares_in, cudaStream_t stream) {
  auto kernel = adamw_kernel<S, G>;
  int device = 0, sms = 0, per_sm = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  int blocks = sms * per_sm;  // all resident at once, as grid.sync() requires
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  if (blocks < 1) fail("adamw: the kernel cannot be made resident on this GPU");
  S* ms = static_cast<S*>(m);
  S* vs = static_cast<S*>(v);
  DecayRanges r = ranges;
  AdamWArgs a = args;
  void* kargs[] = {&params, &master, const_cast<G**>(&grads), &ms, &vs, &n, &r, &a, &norm_out, &scratch,
                   const_cast<float**>(&sum_squares_in)};
  CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), blocks, kThreads,
                                         kargs, 0, stream));
}

// The update alone over elements [begin, end), with the clip factor taken
// from a Σg² already on the device (the whole step's, every shard's): a step
// can then be applied unit by unit, each just before the unit is next used.
// Same arithmetic per element as adamw_kernel's update phase.
template <typename S, typename G>
__global__ void __launch_bounds__(kThreads) adamw_range_kernel(bf16* __restrict__ params,
                                                               float* __restrict__ master,
                                                               const G* __restrict__ grads, S* __restrict__ m,
                                                               S* __restrict__ v, int64_t begin, int64_t end,
                                                               DecayRanges ranges, AdamWArgs a,
                                                               const float* sum_squares) {
  __shared__ float s_scale;
  if (threadIdx.x == 0) {
    const float norm = sqrtf(*sum_squares);
    s_scale = (a.max_norm > 0.0f && norm > a.max_norm) ? a.max_norm / (norm + 1e-6f) : 1.0f;
  }
  __syncthreads();
  const float scale = s_scale;
  update_span(params, master, grads, m, v, begin, end, ranges, a, scale);
}

template <typename S, typename G>
void launch_range(bf16* params, float* master, const G* grads, void* m, void* v, int64_t begin, int64_t end,
                  const DecayRanges& ranges, const AdamWArgs& args, const float* sum_squares, cudaStream_t stream) {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t groups = (end - begin + 7) / 8;  // update_span takes eight at a time
  const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(4 * sms, (groups + kThreads - 1) / kThreads)));
  adamw_range_kernel<S, G><<<blocks, kThreads, 0, stream>>>(params, master, grads, static_cast<S*>(m),
                                                             static_cast<S*>(v), begin, end, ranges, args,
                                                             sum_squares);
  CUDA_CHECK_LAUNCH();
}

// Σg² of one block's grid-stride share → partial[block]; the second kernel
// adds the partials in block order, so the sum does not depend on timing.
template <typename G>
__global__ void __launch_bounds__(kThreads) sum_squares_partial_kernel(const G* __restrict__ g,
                                                                       int64_t n, float* partial) {
  __shared__ float scratch[32];
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  // Eight values per thread per iteration (16-byte loads of bf16, two of
  // fp32) and two iterations in flight: a lone pass over the gradients needs
  // many bytes outstanding per SM to reach copy bandwidth.
  const int64_t n8 = n / 8;
  float ss0 = 0.0f, ss1 = 0.0f;
#pragma unroll 2
  for (int64_t q = first; q < n8; q += threads) {
    float x[8];
    load8f(g, 8 * q, x);
#pragma unroll
    for (int k = 0; k < 8; k += 2) {
      ss0 += x[k] * x[k];
      ss1 += x[k + 1] * x[k + 1];
    }
  }
  float ss = ss0 + ss1;
  for (int64_t i = 8 * n8 + first; i < n; i += threads) {
    const float x = load_state(g, i);
    ss += x * x;
  }
  ss = block_sum(ss, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = ss;
}

__global__ void sum_partials_kernel(const float* partial, int blocks, float* out) {
  double total = 0.0;
  for (int b = 0; b < blocks; ++b) total += partial[b];
  *out = static_cast<float>(total);
}

}  // namespace

size_t adamw_scratch_floats() { return kMaxBlocks; }

void adamw_update_range(bf16* params, float* master, const void* grads, bool grads_bf16, void* m, void* v,
                        bool state_bf16, int64_t begin, int64_t end, const DecayRanges& ranges,
                        const AdamWArgs& args, const float* sum_squares, cudaStream_t stream) {
  if (begin >= end) return;
  if (!aligned16(grads) || !aligned16(params) || !aligned16(m) || !aligned16(v) || (master && !aligned16(master)))
    fail("adamw: parameter, gradient and state buffers must be 16-byte aligned");
  const float* g32 = static_cast<const float*>(grads);
  const bf16* g16 = static_cast<const bf16*>(grads);
  if (state_bf16 && grads_bf16)
    launch_range<bf16>(params, master, g16, m, v, begin, end, ranges, args, sum_squares, stream);
  else if (state_bf16)
    launch_range<bf16>(params, master, g32, m, v, begin, end, ranges, args, sum_squares, stream);
  else if (grads_bf16)
    launch_range<float>(params, master, g16, m, v, begin, end, ranges, args, sum_squares, stream);
  else
    launch_range<float>(params, master, g32, m, v, begin, end, ranges, args, sum_squares, stream);
}

void grad_sum_squares(const void* grads, bool grads_bf16, int64_t n, float* out, float* scratch,
                      cudaStream_t stream) {
  if (!aligned16(grads)) fail("grad_sum_squares: the gradient buffer must be 16-byte aligned");
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int blocks = std::min(kMaxBlocks, 4 * sms);
  if (grads_bf16)
    sum_squares_partial_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const bf16*>(grads), n, scratch);
  else
    sum_squares_partial_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const float*>(grads), n, scratch);
  sum_partials_kernel<<<1, 1, 0, stream>>>(scratch, blocks, out);
  CUDA_CHECK(cudaGetLastError());
}

void adamw_step(bf16* params, float* master, const void* grads, bool grads_bf16, void* m, void* v,
                bool state_bf16,
                int64_t n, const DecayRanges& ranges, const AdamWArgs& args, float* norm_out,
                float* scratch, cudaStream_t stream, const float* sum_squares_in) {
  if (!aligned16(grads) || !aligned16(params) || !aligned16(m) || !aligned16(v) ||
      (master && !aligned16(master)))
    fail("adamw: parameter, gradient and state buffers must be 16-byte aligned");
  const float* g32 = static_cast<const float*>(grads);
  const bf16* g16 = static_cast<const bf16*>(grads);
  if (state_bf16 && grads_bf16)
    launch<bf16>(params, master, g16, m, v, n, ranges, args, norm_out, scratch, sum_squares_in, stream);
  else if (state_bf16)
    launch<bf16>(params, master, g32, m, v, n, ranges, args, norm_out, scratch, sum_squares_in, stream);
  else if (grads_bf16)
    launch<float>(params, master, g16, m, v, n, ranges, args, norm_out, scratch, sum_squares_in, stream);
  else
    launch<float>(params, master, g32, m, v, n, ranges, args, norm_out, scratch, sum_squares_in, stream);
}

}  // namespace intellect::cuda
