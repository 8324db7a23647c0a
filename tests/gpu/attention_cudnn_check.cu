// Standalone GPU check of intellect::cuda::CudnnAttention (cuDNN fused causal GQA attention):
// compares forward (out, lse) and backward (dq, dk, dv) against a plain fp32 reference
// kernel on small shapes, then times forward and forward+backward at T=8192.
//
// Build (from the repository root; needs only the CUDA runtime and cuDNN 9):
//   nvcc -std=c++17 -O2 -arch=sm_90a -Isrc tests/gpu/attention_cudnn_check.cu src/kernels/attention_cudnn.cu -lcudnn -o attention_cudnn_check
// Run:
//   ./attention_cudnn_check                      # the built-in shapes, then the T=8192 timing
//   ./attention_cudnn_check B T H KV hd          # one shape (reference check if T <= 4096, timing)
// Exit code 0: all match; 1: mismatch; 2: an error (message printed); 3: no GPU or cuDNN.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/attention_cudnn.h"
#include "util/error.h"

using intellect::cpu::AttentionShape;
using intellect::cuda::CudnnAttention;

#define CK(call)                                                                             \
  do {                                                                                       \
    cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess)                                                                   \
      intellect::fail("CUDA error ", cudaGetErrorName(e_), ": ", cudaGetErrorString(e_),     \
                      " in ", #call, " at ", __FILE__, ":", __LINE__);                      \
  } while (0)

namespace {

constexpr int kMaxHeadDim = 256;

__device__ float hash_uniform(uint64_t i, uint32_t seed) {  // in [-1, 1)
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull + 1;
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<float>(x >> 40) / static_cast<float>(1ull << 23) - 1.0f;
}

__global__ void fill_bf16(__nv_bfloat16* p, size_t n, uint32_t seed, float amp) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16(amp * hash_uniform(i, seed));
}

__global__ void count_nonfinite_bf16(const __nv_bfloat16* p, size_t n, unsigned long long* bad) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    if (!isfinite(__bfloat162float(p[i]))) atomicAdd(bad, 1ull);
}

__global__ void count_nonfinite_f32(const float* p, size_t n, unsigned long long* bad) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    if (!isfinite(p[i])) atomicAdd(bad, 1ull);
}

struct Dims {
  int B, T, H, KV, D;
  __host__ __device__ int S() const { return (H + 2 * KV) * D; }
  __host__ __device__ int OS() const { return H * D; }
};

// One thread per (b, h, t) query row: causal softmax(q·kᵀ·scale)·v in fp32.
__global__ void ref_forward(const __nv_bfloat16* qkv, float* out, float* lse, Dims d, float scale) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= d.B * d.H * d.T) return;
  const int t = idx % d.T, h = (idx / d.T) % d.H, b = idx / (d.T * d.H);
  const int kvh = h / (d.H / d.KV), S = d.S();
  const __nv_bfloat16* q = qkv + (size_t(b) * d.T + t) * S + h * d.D;
  auto kptr = [&](int j) { return qkv + (size_t(b) * d.T + j) * S + (d.H + kvh) * d.D; };
  auto vptr = [&](int j) { return qkv + (size_t(b) * d.T + j) * S + (d.H + d.KV + kvh) * d.D; };
  float m = -INFINITY;
  for (int j = 0; j <= t; ++j) {
    const __nv_bfloat16* k = kptr(j);
    float s = 0.f;
    for (int c = 0; c < d.D; ++c) s += __bfloat162float(q[c]) * __bfloat162float(k[c]);
    m = fmaxf(m, s * scale);
  }
  float acc[kMaxHeadDim];
  for (int c = 0; c < d.D; ++c) acc[c] = 0.f;
  float l = 0.f;
  for (int j = 0; j <= t; ++j) {
    const __nv_bfloat16* k = kptr(j);
    const __nv_bfloat16* v = vptr(j);
    float s = 0.f;
    for (int c = 0; c < d.D; ++c) s += __bfloat162float(q[c]) * __bfloat162float(k[c]);
    const float p = expf(s * scale - m);
    l += p;
    for (int c = 0; c < d.D; ++c) acc[c] += p * __bfloat162float(v[c]);
  }
  float* o = out + (size_t(b) * d.T + t) * d.OS() + h * d.D;
  for (int c = 0; c < d.D; ++c) o[c] = acc[c] / l;
  lse[(size_t(b) * d.H + h) * d.T + t] = m + logf(l);
}

// One thread per (b, h, t) query row; dk/dv accumulate with atomics. dqkv must be zeroed.
__global__ void ref_backward(const __nv_bfloat16* qkv, const __nv_bfloat16* dout, const float* out,
                             const float* lse, float* dqkv, Dims d, float scale) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= d.B * d.H * d.T) return;
  const int t = idx % d.T, h = (idx / d.T) % d.H, b = idx / (d.T * d.H);
  const int kvh = h / (d.H / d.KV), S = d.S();
  const size_t row = size_t(b) * d.T + t;
  const __nv_bfloat16* q = qkv + row * S + h * d.D;
  const __nv_bfloat16* dO = dout + row * d.OS() + h * d.D;
  const float* o = out + row * d.OS() + h * d.D;
  const float L = lse[(size_t(b) * d.H + h) * d.T + t];
  float Dt = 0.f;
  for (int c = 0; c < d.D; ++c) Dt += __bfloat162float(dO[c]) * o[c];
  float dq[kMaxHeadDim];
  for (int c = 0; c < d.D; ++c) dq[c] = 0.f;
  for (int j = 0; j <= t; ++j) {
    const size_t jrow = size_t(b) * d.T + j;
    const __nv_bfloat16* k = qkv + jrow * S + (d.H + kvh) * d.D;
    const __nv_bfloat16* v = qkv + jrow * S + (d.H + d.KV + kvh) * d.D;
    float s = 0.f, dp = 0.f;
    for (int c = 0; c < d.D; ++c) {
      s += __bfloat162float(q[c]) * __bfloat162float(k[c]);
      dp += __bfloat162float(dO[c]) * __bfloat162float(v[c]);
    }
    const float p = expf(s * scale - L);
    const float ds = p * (dp - Dt);
    float* dk = dqkv + jrow * S + (d.H + kvh) * d.D;
    float* dv = dqkv + jrow * S + (d.H + d.KV + kvh) * d.D;
    for (int c = 0; c < d.D; ++c) {
      dq[c] += ds * __bfloat162float(k[c]);
      atomicAdd(dk + c, scale * ds * __bfloat162float(q[c]));
      atomicAdd(dv + c, p * __bfloat162float(dO[c]));
    }
  }
  float* dqo = dqkv + row * S + h * d.D;
  for (int c = 0; c < d.D; ++c) dqo[c] = scale * dq[c];
}

std::vector<float> to_host_bf16(const __nv_bfloat16* p, size_t n) {
  std::vector<__nv_bfloat16> h(n);
  CK(cudaMemcpy(h.data(), p, n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = __bfloat162float(h[i]);
  return f;
}

std::vector<float> to_host_f32(const float* p, size_t n) {
  std::vector<float> h(n);
  CK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

// max |got - ref| / max |ref| over the columns [c0, c1) of row-major [rows, ld] matrices.
// Returns false (and reports) if it exceeds tol or anything is not finite.
bool compare(const char* name, const std::vector<float>& got, const std::vector<float>& ref,
             size_t rows, size_t ld, size_t c0, size_t c1, double tol) {
  double max_err = 0, max_ref = 0;
  size_t bad = 0, worst = 0;
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = c0; c < c1; ++c) {
      const size_t i = r * ld + c;
      if (!std::isfinite(got[i])) {
        ++bad;
        continue;
      }
      const double e = std::fabs(double(got[i]) - double(ref[i]));
      if (e > max_err) {
        max_err = e;
        worst = i;
      }
      max_ref = std::fmax(max_ref, std::fabs(double(ref[i])));
    }
  const double rel = max_err / (max_ref > 0 ? max_ref : 1.0);
  const bool ok = bad == 0 && rel < tol;
  std::printf("    %-4s max|err| %.3e  max|ref| %.3e  rel %.3e  (worst at %zu: got %.5f ref %.5f)%s%s\n",
              name, max_err, max_ref, rel, worst, got[worst], ref[worst],
              bad ? "  NON-FINITE VALUES" : "", ok ? "" : "  <-- MISMATCH");
  return ok;
}

unsigned long long count_nonfinite(const __nv_bfloat16* p, size_t n, const float* f, size_t nf,
                                   unsigned long long* d_bad) {
  CK(cudaMemset(d_bad, 0, sizeof(unsigned long long)));
  count_nonfinite_bf16<<<1024, 256>>>(p, n, d_bad);
  if (f) count_nonfinite_f32<<<1024, 256>>>(f, nf, d_bad);
  CK(cudaGetLastError());
  unsigned long long h = 0;
  CK(cudaMemcpy(&h, d_bad, sizeof h, cudaMemcpyDeviceToHost));
  return h;
}

// Runs one shape; returns true if everything checked matches.
bool run_shape(const Dims& d, bool reference, bool timing) {
  const AttentionShape s{d.B, d.T, d.H, d.KV, d.D};
  std::printf("\n== B=%d T=%d H=%d KV=%d hd=%d (causal)\n", d.B, d.T, d.H, d.KV, d.D);
  cudaStream_t stream;
  CK(cudaStreamCreate(&stream));
  CudnnAttention attn(s, stream);
  std::printf("  %s\n", attn.describe().c_str());

  const size_t rows = size_t(d.B) * d.T;
  const size_t n_qkv = rows * d.S(), n_out = rows * d.OS(), n_lse = size_t(d.B) * d.H * d.T;
  __nv_bfloat16 *qkv, *dout, *out, *dqkv;
  float* lse;
  void* ws = nullptr;
  CK(cudaMalloc(&qkv, n_qkv * sizeof(__nv_bfloat16)));
  CK(cudaMalloc(&dqkv, n_qkv * sizeof(__nv_bfloat16)));
  CK(cudaMalloc(&dout, n_out * sizeof(__nv_bfloat16)));
  CK(cudaMalloc(&out, n_out * sizeof(__nv_bfloat16)));
  CK(cudaMalloc(&lse, n_lse * sizeof(float)));
  if (attn.workspace_bytes() > 0) CK(cudaMalloc(&ws, attn.workspace_bytes()));
  unsigned long long* d_bad;
  CK(cudaMalloc(&d_bad, sizeof(unsigned long long)));

  fill_bf16<<<1024, 256, 0, stream>>>(qkv, n_qkv, 1234u + d.T, 2.0f);
  fill_bf16<<<1024, 256, 0, stream>>>(dout, n_out, 777u + d.T, 1.0f);
  // Garbage in the outputs so a plan that leaves something unwritten shows up.
  CK(cudaMemsetAsync(dqkv, 0x7f, n_qkv * sizeof(__nv_bfloat16), stream));
  CK(cudaMemsetAsync(out, 0x7f, n_out * sizeof(__nv_bfloat16), stream));
  CK(cudaGetLastError());

  // Twice each: the second run must not depend on the first (e.g. an un-zeroed dQ accumulator).
  for (int rep = 0; rep < 2; ++rep) {
    attn.forward(out, lse, qkv, ws);
    attn.backward(dqkv, dout, qkv, out, lse, ws);
  }
  CK(cudaStreamSynchronize(stream));
  CK(cudaGetLastError());

  bool ok = true;
  const unsigned long long bad_fwd = count_nonfinite(out, n_out, lse, n_lse, d_bad);
  const unsigned long long bad_bwd = count_nonfinite(dqkv, n_qkv, nullptr, 0, d_bad);
  std::printf("  non-finite values: out+lse %llu, dqkv %llu\n", bad_fwd, bad_bwd);
  if (bad_fwd || bad_bwd) ok = false;

  if (reference) {
    const float scale = 1.0f / std::sqrt(float(d.D));
    float *ref_out, *ref_lse, *ref_dqkv;
    CK(cudaMalloc(&ref_out, n_out * sizeof(float)));
    CK(cudaMalloc(&ref_lse, n_lse * sizeof(float)));
    CK(cudaMalloc(&ref_dqkv, n_qkv * sizeof(float)));
    CK(cudaMemset(ref_dqkv, 0, n_qkv * sizeof(float)));
    const int threads = 128, blocks = int((n_lse + threads - 1) / threads);
    ref_forward<<<blocks, threads>>>(qkv, ref_out, ref_lse, d, scale);
    CK(cudaGetLastError());
    ref_backward<<<blocks, threads>>>(qkv, dout, ref_out, ref_lse, ref_dqkv, d, scale);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());

    const double tol = 2e-2;
    const auto g_out = to_host_bf16(out, n_out), r_out = to_host_f32(ref_out, n_out);
    const auto g_lse = to_host_f32(lse, n_lse), r_lse = to_host_f32(ref_lse, n_lse);
    const auto g_d = to_host_bf16(dqkv, n_qkv), r_d = to_host_f32(ref_dqkv, n_qkv);
    const size_t S = d.S(), hq = size_t(d.H) * d.D, hk = size_t(d.KV) * d.D;
    std::printf("  vs fp32 reference (rel = max|err| / max|ref|, tolerance %.0e):\n", tol);
    ok &= compare("out", g_out, r_out, rows, d.OS(), 0, d.OS(), tol);
    ok &= compare("lse", g_lse, r_lse, 1, n_lse, 0, n_lse, tol);
    ok &= compare("dq", g_d, r_d, rows, S, 0, hq, tol);
    ok &= compare("dk", g_d, r_d, rows, S, hq, hq + hk, tol);
    ok &= compare("dv", g_d, r_d, rows, S, hq + hk, S, tol);
    CK(cudaFree(ref_out));
    CK(cudaFree(ref_lse));
    CK(cudaFree(ref_dqkv));
  }

  if (timing) {
    const int warmup = 3, iters = 20;
    for (int i = 0; i < warmup; ++i) {
      attn.forward(out, lse, qkv, ws);
      attn.backward(dqkv, dout, qkv, out, lse, ws);
    }
    cudaEvent_t e0, e1, e2;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaEventCreate(&e2));
    CK(cudaEventRecord(e0, stream));
    for (int i = 0; i < iters; ++i) attn.forward(out, lse, qkv, ws);
    CK(cudaEventRecord(e1, stream));
    for (int i = 0; i < iters; ++i) {
      attn.forward(out, lse, qkv, ws);
      attn.backward(dqkv, dout, qkv, out, lse, ws);
    }
    CK(cudaEventRecord(e2, stream));
    CK(cudaEventSynchronize(e2));
    float ms_f = 0, ms_fb = 0;
    CK(cudaEventElapsedTime(&ms_f, e0, e1));
    CK(cudaEventElapsedTime(&ms_fb, e1, e2));
    ms_f /= iters;
    ms_fb /= iters;
    const double fwd_flops = 4.0 * d.B * d.H * double(d.T) * d.T * d.D / 2.0;  // causal
    const double bwd_flops = 2.5 * fwd_flops;
    const double ms_b = ms_fb - ms_f;
    std::printf("  timing (%d iters after %d warm-up):\n", iters, warmup);
    std::printf("    forward           %8.3f ms  %7.1f TFLOP/s\n", ms_f, fwd_flops / (ms_f * 1e-3) / 1e12);
    std::printf("    forward+backward  %8.3f ms  %7.1f TFLOP/s\n", ms_fb,
                (fwd_flops + bwd_flops) / (ms_fb * 1e-3) / 1e12);
    std::printf("    backward (diff)   %8.3f ms  %7.1f TFLOP/s\n", ms_b,
                ms_b > 0 ? bwd_flops / (ms_b * 1e-3) / 1e12 : 0.0);
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaEventDestroy(e2));
    const unsigned long long bad = count_nonfinite(dqkv, n_qkv, lse, n_lse, d_bad);
    if (bad) {
      std::printf("  non-finite values after timing: %llu\n", bad);
      ok = false;
    }
  }

  CK(cudaFree(qkv));
  CK(cudaFree(dqkv));
  CK(cudaFree(dout));
  CK(cudaFree(out));
  CK(cudaFree(lse));
  CK(cudaFree(d_bad));
  if (ws) CK(cudaFree(ws));
  CK(cudaStreamDestroy(stream));
  std::printf("  %s\n", ok ? "OK" : "FAILED");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (!CudnnAttention::available()) {
    std::printf("no GPU or no cuDNN >= 9 at run time; nothing checked\n");
    return 3;
  }
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
    std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  struct Case {
    Dims d;
    bool reference, timing;
  };
  std::vector<Case> cases{{{1, 128, 4, 2, 64}, true, false},
                          {{2, 257, 8, 2, 128}, true, false},
                          {{1, 8192, 32, 8, 128}, false, true}};
  if (argc == 6) {
    Dims d{std::atoi(argv[1]), std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]),
           std::atoi(argv[5])};
    if (d.D > kMaxHeadDim) std::printf("(hd > %d: no reference check)\n", kMaxHeadDim);
    cases = {{d, d.T <= 4096 && d.D <= kMaxHeadDim, true}};
  } else if (argc != 1) {
    std::printf("usage: %s [B T H KV hd]\n", argv[0]);
    return 2;
  }
  bool ok = true, error = false;
  for (const Case& c : cases) {
    try {
      ok &= run_shape(c.d, c.reference, c.timing);
    } catch (const std::exception& e) {
      std::printf("  ERROR: %s\n", e.what());
      error = true;
      if (cudaDeviceSynchronize() != cudaSuccess) break;  // a sticky CUDA error: stop here
    }
  }
  std::printf("\n%s\n", error ? "ERROR" : ok ? "ALL OK" : "MISMATCH");
  return error ? 2 : ok ? 0 : 1;
}
