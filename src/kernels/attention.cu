// Fallback fused causal GQA attention: flash-style (online softmax, only the
// row log-sum-exp kept; T×T scores never stored), on CUDA cores, one warp per
// query (forward, dQ) or per key (dK/dV), key/query tiles staged in shared
// memory and shared by the block's 8 warps. Lane j holds head dims j, j+32, …
// It is the always-available path (any head_dim ≤ 256, any GPU, deterministic:
// no atomics); cuDNN's fused SDPA is the fast path.
//
// With document segments a query sees keys from its segment's first token on,
// and a key is seen by queries up to its segment's last token: each block
// only stages the tiles its warps can see, so masked work is skipped, not
// computed and thrown away. Without segments the bounds are the row's, and the
// arithmetic is exactly the plain causal one.
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cuda_common.cuh"

namespace intellect::cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kTile = 32;
constexpr int kMaxPerLane = 8;  // head_dim ≤ 256

struct Geometry {
  int64_t T, H, KV, hd, stride, out_stride, group, k_off, v_off;
  float scale;
  const int32_t* cu_seqlens;  // device; nullptr = one segment per row
  int64_t n_segments;
};

Geometry geometry(const cpu::AttentionShape& s, const int32_t* cu_seqlens, int64_t n_segments) {
  Geometry g;
  g.cu_seqlens = cu_seqlens;
  g.n_segments = n_segments;
  g.T = s.T;
  g.H = s.n_heads;
  g.KV = s.n_kv_heads;
  g.hd = s.head_dim;
  g.stride = s.qkv_stride();
  g.out_stride = s.out_stride();
  g.group = s.n_heads / s.n_kv_heads;
  g.k_off = s.n_heads * s.head_dim;
  g.v_off = g.k_off + s.n_kv_heads * s.head_dim;
  g.scale = 1.0f / sqrtf(static_cast<float>(s.head_dim));
  return g;
}

// Row-relative bounds of the segment holding position t of row b: the first
// key a query at t may see, and one past the last query that may see a key at t.
struct Span {
  int64_t first, end;
};
__device__ Span segment_span(const Geometry& g, int64_t b, int64_t t) {
  if (g.cu_seqlens == nullptr) return {0, g.T};
  const int64_t flat = b * g.T + t;
  int64_t lo = 0, hi = g.n_segments - 1;  // the largest k with cu_seqlens[k] <= flat
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (g.cu_seqlens[mid] <= flat) lo = mid;
    else hi = mid - 1;
  }
  return {g.cu_seqlens[lo] - b * g.T, g.cu_seqlens[lo + 1] - b * g.T};
}

__device__ __forceinline__ void load_row(float* dst, const bf16* src, const Geometry& g, int lane) {
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    dst[j] = i < g.hd ? __bfloat162float(src[i]) : 0.0f;
  }
}

// Stages rows [first, first + count) of one head into shared memory as float.
__device__ __forceinline__ void stage(float* dst, const bf16* base, int64_t row_stride,
                                      int64_t first, int count, int64_t hd) {
  for (int64_t e = threadIdx.x; e < count * hd; e += blockDim.x) {
    const int64_t r = e / hd, i = e % hd;
    dst[r * hd + i] = __bfloat162float(base[(first + r) * row_stride + i]);
  }
}

__device__ __forceinline__ float dot_row(const float* a, const float* smem_row, const Geometry& g,
                                         int lane) {
  float d = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    if (i < g.hd) d += a[j] * smem_row[i];
  }
  return warp_sum(d);
}

__global__ void forward_kernel(bf16* out, float* lse, const bf16* qkv, Geometry g) {
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = smem + kTile * g.hd;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / g.group;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kWarps, t = t0 + warp;
  const bf16* base = qkv + b * g.T * g.stride;
  float q[kMaxPerLane], acc[kMaxPerLane] = {};
  if (t < g.T) load_row(q, base + t * g.stride + h * g.hd, g, lane);
  float m = -INFINITY, l = 0.0f;
  const int64_t last = min(g.T - 1, t0 + kWarps - 1);
  // Segment starts never decrease along a row: the block's first query sees
  // the earliest key any of its queries sees.
  const int64_t block_first = segment_span(g, b, t0).first;
  const int64_t first = t < g.T ? segment_span(g, b, t).first : 0;
  for (int64_t u0 = block_first; u0 <= last; u0 += kTile) {
    const int count = static_cast<int>(min((int64_t)kTile, last + 1 - u0));
    __syncthreads();
    stage(ks, base + g.k_off + kvh * g.hd, g.stride, u0, count, g.hd);
    stage(vs, base + g.v_off + kvh * g.hd, g.stride, u0, count, g.hd);
    __syncthreads();
    if (t >= g.T) continue;
    for (int k = static_cast<int>(max((int64_t)0, first - u0)); k < count && u0 + k <= t; ++k) {
      const float s = g.scale * dot_row(q, ks + k * g.hd, g, lane);
      const float m_new = fmaxf(m, s);
      const float corr = __expf(m - m_new), p = __expf(s - m_new);
      l = l * corr + p;
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int64_t i = lane + 32 * j;
        acc[j] = acc[j] * corr + (i < g.hd ? p * vs[k * g.hd + i] : 0.0f);
      }
      m = m_new;
    }
  }
  if (t >= g.T) return;
  bf16* o = out + (b * g.T + t) * g.out_stride + h * g.hd;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    if (i < g.hd) o[i] = __float2bfloat16(acc[j] / l);
  }
  if (lane == 0) lse[(b * g.H + h) * g.T + t] = m + logf(l);
}

// D[b,h,t] = dO · O, the softmax backward's row term.
__global__ void dot_do_o_kernel(float* D, const bf16* dout, const bf16* out, Geometry g, int64_t rows) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;  // r = (b*H + h)*T + t
  const int64_t t = r % g.T, h = (r / g.T) % g.H, b = r / (g.T * g.H);
  const int64_t off = (b * g.T + t) * g.out_stride + h * g.hd;
  float d = 0.0f;
  for (int64_t i = lane; i < g.hd; i += 32) d += __bfloat162float(dout[off + i]) * __bfloat162float(out[off + i]);
  d = warp_sum(d);
  if (lane == 0) D[r] = d;
}

__global__ void dq_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                          const float* D, Geometry g) {
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = smem + kTile * g.hd;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.z, h = blockIdx.y, kvh = h / g.group;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kWarps, t = t0 + warp;
  const bf16* base = qkv + b * g.T * g.stride;
  float q[kMaxPerLane], dO[kMaxPerLane], dq[kMaxPerLane] = {};
  float L = 0.0f, Dt = 0.0f;
  if (t < g.T) {
    load_row(q, base + t * g.stride + h * g.hd, g, lane);
    load_row(dO, dout + (b * g.T + t) * g.out_stride + h * g.hd, g, lane);
    L = lse[(b * g.H + h) * g.T + t];
    Dt = D[(b * g.H + h) * g.T + t];
  }
  const int64_t last = min(g.T - 1, t0 + kWarps - 1);
  const int64_t block_first = segment_span(g, b, t0).first;
  const int64_t first = t < g.T ? segment_span(g, b, t).first : 0;
  for (int64_t u0 = block_first; u0 <= last; u0 += kTile) {
    const int count = static_cast<int>(min((int64_t)kTile, last + 1 - u0));
    __syncthreads();
    stage(ks, base + g.k_off + kvh * g.hd, g.stride, u0, count, g.hd);
    stage(vs, base + g.v_off + kvh * g.hd, g.stride, u0, count, g.hd);
    __syncthreads();
    if (t >= g.T) continue;
    for (int k = static_cast<int>(max((int64_t)0, first - u0)); k < count && u0 + k <= t; ++k) {
      const float p = __expf(g.scale * dot_row(q, ks + k * g.hd, g, lane) - L);
      const float dp = dot_row(dO, vs + k * g.hd, g, lane);
      const float ds = p * (dp - Dt) * g.scale;
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int64_t i = lane + 32 * j;
        if (i < g.hd) dq[j] += ds * ks[k * g.hd + i];
      }
    }
  }
  if (t >= g.T) return;
  bf16* o = dqkv + (b * g.T + t) * g.stride + h * g.hd;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    if (i < g.hd) o[i] = __float2bfloat16(dq[j]);
  }
}

// One warp per key position of one KV head: sums over every query head of
// the group and every later query position, in a fixed order.
__global__ void dkv_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                           const float* D, Geometry g) {
  extern __shared__ float smem[];
  float* qs = smem;
  float* dos = smem + kTile * g.hd;
  float* ls = dos + kTile * g.hd;
  float* ds_ = ls + kTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.z, kvh = blockIdx.y;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * kWarps, u = u0 + warp;
  const bf16* base = qkv + b * g.T * g.stride;
  float k[kMaxPerLane], v[kMaxPerLane], dk[kMaxPerLane] = {}, dv[kMaxPerLane] = {};
  if (u < g.T) {
    load_row(k, base + u * g.stride + g.k_off + kvh * g.hd, g, lane);
    load_row(v, base + u * g.stride + g.v_off + kvh * g.hd, g, lane);
  }
  // Segment ends never decrease along a row: the block's last key is seen by
  // the latest query any of its keys is seen by.
  const int64_t block_end = segment_span(g, b, min(u0 + kWarps - 1, g.T - 1)).end;
  const int64_t end = u < g.T ? segment_span(g, b, u).end : 0;
  for (int64_t h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
    for (int64_t t0 = u0; t0 < block_end; t0 += kTile) {
      const int count = static_cast<int>(min((int64_t)kTile, block_end - t0));
      __syncthreads();
      stage(qs, base + h * g.hd, g.stride, t0, count, g.hd);
      stage(dos, dout + b * g.T * g.out_stride + h * g.hd, g.out_stride, t0, count, g.hd);
      for (int e = threadIdx.x; e < count; e += blockDim.x) {
        ls[e] = lse[(b * g.H + h) * g.T + t0 + e];
        ds_[e] = D[(b * g.H + h) * g.T + t0 + e];
      }
      __syncthreads();
      if (u >= g.T) continue;
      for (int r = 0; r < count && t0 + r < end; ++r) {
        if (t0 + r < u) continue;
        const float p = __expf(g.scale * dot_row(k, qs + r * g.hd, g, lane) - ls[r]);
        const float dp = dot_row(v, dos + r * g.hd, g, lane);
        const float ds = p * (dp - ds_[r]) * g.scale;
#pragma unroll
        for (int j = 0; j < kMaxPerLane; ++j) {
          const int64_t i = lane + 32 * j;
          if (i < g.hd) {
            dk[j] += ds * qs[r * g.hd + i];
            dv[j] += p * dos[r * g.hd + i];
          }
        }
      }
    }
  }
  if (u >= g.T) return;
  bf16* dko = dqkv + (b * g.T + u) * g.stride + g.k_off + kvh * g.hd;
  bf16* dvo = dqkv + (b * g.T + u) * g.stride + g.v_off + kvh * g.hd;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int64_t i = lane + 32 * j;
    if (i < g.hd) {
      dko[i] = __float2bfloat16(dk[j]);
      dvo[i] = __float2bfloat16(dv[j]);
    }
  }
}

void set_smem(const void* kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

void check_shape(const cpu::AttentionShape& s) {
  if (s.head_dim > 32 * kMaxPerLane)
    fail("attention: head_dim ", s.head_dim, " exceeds the fallback kernel's limit of ", 32 * kMaxPerLane);
  if (s.n_heads % s.n_kv_heads != 0) fail("attention: n_kv_heads must divide n_heads");
}

}  // namespace

void attention_forward(bf16* out, float* lse, const bf16* qkv, const cpu::AttentionShape& s,
                       cudaStream_t stream, const int32_t* cu_seqlens, int64_t n_segments) {
  check_shape(s);
  if (s.B * s.T == 0) return;
  const Geometry g = geometry(s, cu_seqlens, n_segments);
  const size_t smem = sizeof(float) * 2 * kTile * g.hd;
  set_smem(reinterpret_cast<const void*>(forward_kernel), smem);
  dim3 grid(ceil_div(s.T, kWarps), static_cast<unsigned>(s.n_heads), static_cast<unsigned>(s.B));
  forward_kernel<<<grid, kWarps * 32, smem, stream>>>(out, lse, qkv, g);
  CUDA_CHECK_LAUNCH();
}

void attention_backward(bf16* dqkv, float* scratch, const bf16* dout, const bf16* qkv,
                        const bf16* out, const float* lse, const cpu::AttentionShape& s,
                        cudaStream_t stream, const int32_t* cu_seqlens, int64_t n_segments) {
  check_shape(s);
  if (s.B * s.T == 0) return;
  const Geometry g = geometry(s, cu_seqlens, n_segments);
  const int64_t rows = s.B * s.n_heads * s.T;
  dot_do_o_kernel<<<ceil_div(rows, kWarps), kWarps * 32, 0, stream>>>(scratch, dout, out, g, rows);
  CUDA_CHECK_LAUNCH();
  const size_t smem_q = sizeof(float) * 2 * kTile * g.hd;
  set_smem(reinterpret_cast<const void*>(dq_kernel), smem_q);
  dim3 grid_q(ceil_div(s.T, kWarps), static_cast<unsigned>(s.n_heads), static_cast<unsigned>(s.B));
  dq_kernel<<<grid_q, kWarps * 32, smem_q, stream>>>(dqkv, dout, qkv, lse, scratch, g);
  CUDA_CHECK_LAUNCH();
  const size_t smem_kv = sizeof(float) * (2 * kTile * g.hd + 2 * kTile);
  set_smem(reinterpret_cast<const void*>(dkv_kernel), smem_kv);
  dim3 grid_kv(ceil_div(s.T, kWarps), static_cast<unsigned>(s.n_kv_heads), static_cast<unsigned>(s.B));
  dkv_kernel<<<grid_kv, kWarps * 32, smem_kv, stream>>>(dqkv, dout, qkv, lse, scratch, g);
  CUDA_CHECK_LAUNCH();
}

}  // namespace intellect::cuda
