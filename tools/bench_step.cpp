// bench_step: times full training steps (forward, backward, AdamW) of a config
// on the GPU with CUDA events, after warm-up, and prints tokens/s, achieved
// TFLOP/s and MFU; then each kernel alone at the same shapes against its floor.
//   bench_step [--config FILE] [--set k=v]... [--steps N] [--warmup N] [--no-kernels]
//              [--doc-len MEAN] [--ce-rowwise]
// --ce-rowwise times the training step on the rowwise cross-entropy kernel
// instead of the cluster kernel (the default, kernels/cross_entropy.h); the
// kernel table times both kernels either way.
// --doc-len MEAN packs documents of lengths drawn around MEAN (exponentially
// distributed, as web text roughly is: many short, a long tail) into the rows
// and times the step and attention masked per document as well as causal per
// row, printing both and the difference.
// Batches are random tokens: the data pipeline is not what is measured.
// With train.gpus > 1 (or 0: all) it times the FSDP backend over the node's
// GPUs with a wall clock (each step ends in a synchronising optimizer step)
// and prints tokens/s per GPU, so runs at 1, 2, 4, 8 GPUs give the scaling.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/attention_cudnn.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda_device.h"
#include "kernels/embedding.h"
#include "kernels/fp8.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "model/init.h"
#include "model/llama_cuda.h"
#include "train/backend.h"
#include "train/backend_cuda.h"
#include "train/config.h"
#include "util/error.h"
#include "util/rng.h"

namespace {

using namespace intellect;
using cuda::bf16;

constexpr double kPeakTflops = 989.0;     // H100/H200 dense bf16, the MFU yardstick
constexpr double kGemmTflops = 790.0;     // measured cuBLAS bf16 rate on the lent H200
constexpr double kCopyTBs = 4.2;          // measured device copy bandwidth

void check(cudaError_t e) {
  if (e != cudaSuccess) fail("CUDA: ", cudaGetErrorString(e));
}

// Mean milliseconds of fn over iters runs on stream s, after one warm-up run.
double time_ms(cudaStream_t s, int iters, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a));
  check(cudaEventCreate(&b));
  fn();
  check(cudaEventRecord(a, s));
  for (int i = 0; i < iters; ++i) fn();
  check(cudaEventRecord(b, s));
  check(cudaEventSynchronize(b));
  float ms = 0;
  check(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / iters;
}

template <class T>
T* dalloc(size_t n) {
  void* p = nullptr;
  check(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  check(cudaMemset(p, 0, std::max<size_t>(n, 1) * sizeof(T)));
  return static_cast<T*>(p);
}

void fill_random_bf16(bf16* p, size_t n, uint64_t seed, float scale) {
  std::vector<bf16> h(n);
  for (size_t i = 0; i < n; ++i) h[i] = __float2bfloat16(scale * static_cast<float>(normal01(seed, i)));
  check(cudaMemcpy(p, h.data(), n * sizeof(bf16), cudaMemcpyHostToDevice));
}

void row_mem(const char* name, double ms, double bytes) {
  const double floor_ms = bytes / (kCopyTBs * 1e12) * 1e3;
  std::printf("  %-34s %9.3f ms  %7.2f TB/s  floor %8.3f ms  %5.1f%% of copy bandwidth\n", name, ms,
              bytes / (ms * 1e-3) / 1e12, floor_ms, 100.0 * floor_ms / ms);
}
// cu_seqlens for documents of exponentially distributed lengths with the given
// mean, laid end to end over B rows of T tokens and cut at row starts, as the
// loader packs them.
std::vector<int32_t> packed_documents(int64_t B, int64_t T, double mean_len, uint64_t seed) {
  std::vector<int32_t> cu{0};
  int64_t doc_end = 0;
  for (int64_t i = 1, d = 0; i <= B * T; ++i) {
    while (doc_end < i)
      doc_end += std::max<int64_t>(1, std::llround(-mean_len * std::log(uniform01(seed, static_cast<uint64_t>(d++)))));
    if (i == B * T || i % T == 0 || i == doc_end) cu.push_back(static_cast<int32_t>(i));
  }
  return cu;
}

void print_documents(const std::vector<int32_t>& cu, double mean_len) {
  int32_t longest = 0;
  for (size_t k = 0; k + 1 < cu.size(); ++k) longest = std::max(longest, cu[k + 1] - cu[k]);
  const double n = static_cast<double>(cu.size() - 1);
  std::printf("  documents: %zu segments (lengths drawn around %.0f, cut at row starts): mean %.0f, longest %d tokens\n",
              cu.size() - 1, mean_len, cu.back() / n, longest);
}

void row_flops(const char* name, double ms, double flops, double ceiling) {
  const double floor_ms = flops / (ceiling * 1e12) * 1e3;
  std::printf("  %-34s %9.3f ms  %7.1f TFLOP/s  floor %8.3f ms  %5.1f%% of %.0f TFLOP/s\n", name, ms,
              flops / (ms * 1e-3) / 1e12, floor_ms, 100.0 * floor_ms / ms, ceiling);
}

// The FP8 linear layers' own work (precision.matmul fp8): the casts against
// their copy-bandwidth floor (absmax reads 2 bytes a value, a cast reads 2
// and writes 1), and the FP8 products against FP8's dense peak
// (kFp8PeakTflops: twice bf16's 989).
constexpr double kFp8PeakTflops = 1979.0;
void bench_fp8_kernels(const ModelConfig& m, int64_t N, cudaStream_t s, cuda::Blas& blas, int it) {
  const int64_t D = m.dim, F = m.ffn_dim, Q = m.qkv_dim();
  std::printf("  FP8 linear layers (precision.matmul fp8):\n");
  const int64_t x_n = N * std::max({D, m.q_dim(), F}), g_n = N * std::max({Q, D, 2 * F}), w_n = 2 * F * D;
  bf16 *x = dalloc<bf16>(g_n), *w = dalloc<bf16>(w_n), *out = dalloc<bf16>(N * std::max(2 * F, Q));
  fill_random_bf16(x, g_n, 11, 1.0f);
  fill_random_bf16(w, w_n, 12, 0.02f);
  uint8_t *x8 = dalloc<uint8_t>(g_n), *g8 = dalloc<uint8_t>(g_n), *w8 = dalloc<uint8_t>(w_n), *wt8 = dalloc<uint8_t>(w_n);
  // kFp8ScaleSlotBytes apart, as the model keeps them: the input's amax and inverse scale, the weight's, the gradient's
  constexpr int kS = kFp8ScaleSlotBytes / sizeof(float);
  float* slots = dalloc<float>(kS * 6);
  row_mem("fp8 absmax (SwiGLU's output)", time_ms(s, it, [&] { cuda::absmax(slots, x, N * F, s); }), 2.0 * N * F);
  row_mem("fp8 cast e4m3 (SwiGLU's output)", time_ms(s, it, [&] {
            cuda::fp8_cast(x8, slots + kS, x, N * F, slots, Fp8Format::e4m3, s);
          }), 3.0 * N * F);
  cuda::absmax(slots + 2 * kS, w, w_n, s);
  row_mem("fp8 cast e4m3 transposed (gate|up w)", time_ms(s, it, [&] {
            cuda::fp8_cast_transposed(wt8, slots + 3 * kS, w, 2 * F, D, slots + 2 * kS, Fp8Format::e4m3, s);
          }), 3.0 * w_n);
  cuda::fp8_cast(x8, slots + kS, x, x_n, slots, Fp8Format::e4m3, s);
  cuda::absmax(slots + 4 * kS, x, g_n, s);
  cuda::fp8_cast(g8, slots + 5 * kS, x, g_n, slots + 4 * kS, Fp8Format::e5m2, s);  // an output gradient's format
  cuda::fp8_cast(w8, slots + 3 * kS, w, w_n, slots + 2 * kS, Fp8Format::e4m3, s);
  struct G { const char* name; int64_t M, Nn, K; };
  for (const G& g : {G{"fp8 gemm qkv   fwd", N, Q, D}, G{"fp8 gemm o     fwd", N, D, m.q_dim()},
                     G{"fp8 gemm gate|up fwd", N, 2 * F, D}, G{"fp8 gemm down  fwd", N, D, F}})
    row_flops(g.name, time_ms(s, it, [&] { blas.forward_fp8(out, x8, slots + kS, w8, slots + 3 * kS, g.M, g.Nn, g.K); }),
              2.0 * g.M * g.Nn * g.K, kFp8PeakTflops);
  for (const G& g : {G{"fp8 gemm gate|up dX", N, 2 * F, D}, G{"fp8 gemm down  dX", N, D, F}})
    row_flops(g.name, time_ms(s, it, [&] { blas.input_grad_fp8(out, g8, slots + 5 * kS, wt8, slots + 3 * kS, g.M, g.Nn, g.K); }),
              2.0 * g.M * g.Nn * g.K, kFp8PeakTflops);
  // precision.fp8_weight_gradients: the operands cast transposed (the casts' cost is the transposed row above)
  bf16* dw = dalloc<bf16>(w_n);
  for (const G& g : {G{"fp8 gemm gate|up dW", N, 2 * F, D}, G{"fp8 gemm down  dW", N, D, F}})
    row_flops(g.name, time_ms(s, it, [&] {
                blas.weight_grad_fp8({dw, true, false}, g8, slots + 5 * kS, x8, slots + kS, g.M, g.Nn, g.K);
              }),
              2.0 * g.M * g.Nn * g.K, kFp8PeakTflops);
  cudaFree(dw);
  for (void* p : {static_cast<void*>(x), static_cast<void*>(w), static_cast<void*>(out), static_cast<void*>(x8),
                  static_cast<void*>(g8), static_cast<void*>(w8), static_cast<void*>(wt8), static_cast<void*>(slots)})
    cudaFree(p);
}

// What the kernel timings share: the shapes, a stream, activation buffers
// as large as the widest GEMM output, a weight and its fp32 gradient as
// large as the largest, RMSNorm's and attention's scratch, and cuBLAS.
struct KernelBench {
  const Config& cfg;
  const ModelConfig& m;
  int64_t B, T, N;
  cudaStream_t s = nullptr;
  int it = 20;
  bf16 *a = nullptr, *b = nullptr, *c = nullptr, *d = nullptr, *w = nullptr;
  float *dw = nullptr, *rstd = nullptr, *scratch = nullptr;
  void* ws = nullptr;
  std::unique_ptr<cuda::Blas> blas;

  KernelBench(const Config& config, int64_t batch, int64_t seq)
      : cfg(config), m(config.model), B(batch), T(seq), N(batch * seq) {
    const int64_t D = m.dim, F = m.ffn_dim, V = m.vocab_size, Q = m.qkv_dim();
    check(cudaStreamCreate(&s));
    const int64_t act = N * std::max(2 * F, Q), wsz = std::max(2 * F, std::max(V, Q)) * std::max(D, F);
    a = dalloc<bf16>(act), b = dalloc<bf16>(act), c = dalloc<bf16>(act), d = dalloc<bf16>(act);
    fill_random_bf16(a, act, 1, 1.0f);
    fill_random_bf16(b, act, 2, 1.0f);
    w = dalloc<bf16>(wsz);
    fill_random_bf16(w, wsz, 3, 0.02f);
    dw = dalloc<float>(wsz);
    rstd = dalloc<float>(N);
    scratch = dalloc<float>(std::max<size_t>(cuda::rmsnorm_backward_scratch_floats(N, D), N * m.n_heads));
    ws = dalloc<uint8_t>(cuda::Blas::kWorkspaceBytes);
    blas = std::make_unique<cuda::Blas>(s, ws, cuda::Blas::kWorkspaceBytes);
  }
  // The activations and weights, before AdamW times buffers of the whole model.
  void free_activations() {
    for (void* p : {static_cast<void*>(a), static_cast<void*>(b), static_cast<void*>(c), static_cast<void*>(d),
                    static_cast<void*>(w), static_cast<void*>(dw)})
      cudaFree(p);
    a = b = c = d = w = nullptr;
    dw = nullptr;
  }
  int64_t classifier_chunk() const { return std::min<int64_t>(N, (int64_t(512) << 20) / (2 * m.vocab_size)); }
};

void bench_gemm_rows(KernelBench& k) {
  const ModelConfig& m = k.m;
  const int64_t N = k.N, D = m.dim, F = m.ffn_dim, V = m.vocab_size, Q = m.qkv_dim();
  struct G { const char* name; int64_t M, Nn, K; };
  for (const G& g : {G{"gemm qkv   fwd", N, Q, D}, G{"gemm o     fwd", N, D, m.q_dim()},
                     G{"gemm gate|up fwd", N, 2 * F, D}, G{"gemm down  fwd", N, D, F},
                     G{"gemm lm_head fwd (chunk)", k.classifier_chunk(), V, D}}) {
    row_flops(g.name, time_ms(k.s, k.it, [&] { k.blas->forward(k.c, k.a, k.w, g.M, g.Nn, g.K); }),
              2.0 * g.M * g.Nn * g.K, kGemmTflops);
  }
  for (const G& g : {G{"gemm gate|up bwd (dX+dW)", N, 2 * F, D}, G{"gemm down bwd (dX+dW)", N, D, F}}) {
    row_flops((g.name + std::string(", dW fp32 +=")).c_str(), time_ms(k.s, k.it, [&] {
                k.blas->backward(k.c, {k.dw, false, true}, k.a, k.b, k.w, g.M, g.Nn, g.K);
              }), 4.0 * g.M * g.Nn * g.K, kGemmTflops);
    row_flops((g.name + std::string(", dW bf16 =")).c_str(), time_ms(k.s, k.it, [&] {
                k.blas->backward(k.c, {k.dw, true, false}, k.a, k.b, k.w, g.M, g.Nn, g.K);
              }), 4.0 * g.M * g.Nn * g.K, kGemmTflops);
  }
  if (k.cfg.precision.matmul == "fp8") bench_fp8_kernels(m, N, k.s, *k.blas, k.it);
}

// The cross-entropy chunk: the cluster kernel (allowed here whatever
// --ce-rowwise says: the table times both), then the rowwise kernel on the
// same logits, the before/after in one run. Both floors are the 4 bytes a
// logit of one read and one write.
void bench_cross_entropy_rows(KernelBench& k, const int32_t* dtok) {
  const int64_t chunk = k.classifier_chunk(), V = k.m.vocab_size;
  bf16* logits = dalloc<bf16>(chunk * V);
  fill_random_bf16(logits, chunk * V, 6, 2.0f);
  float *ce = dalloc<float>(k.N), *zz = dalloc<float>(k.N);
  const bool was_allowed = cuda::cluster_cross_entropy_allowed();
  cuda::allow_cluster_cross_entropy(true);
  const bool cluster =
      cuda::cross_entropy_kernel_for(chunk, V, logits, nullptr) == cuda::CrossEntropyKernel::kCluster;
  std::printf("  (timing the cross-entropy chunk, %s kernel, %lld x %lld)\n", cluster ? "cluster" : "rowwise",
              static_cast<long long>(chunk), static_cast<long long>(V));
  std::fflush(stdout);
  row_mem(cluster ? "cross-entropy+z (chunk), cluster" : "cross-entropy+z (chunk), rowwise", time_ms(k.s, k.it, [&] {
            cuda::cross_entropy_forward_backward(logits, ce, zz, nullptr, dtok, chunk, V, 2e-4f, 1e-4f, k.s);
          }), 4.0 * chunk * V);
  if (cluster) {
    fill_random_bf16(logits, chunk * V, 6, 2.0f);
    row_mem("cross-entropy+z (chunk), rowwise", time_ms(k.s, k.it, [&] {
              cuda::cross_entropy_forward_backward_rowwise(logits, ce, zz, nullptr, dtok, chunk, V, 2e-4f, 1e-4f, k.s);
            }), 4.0 * chunk * V);
  }
  cuda::allow_cluster_cross_entropy(was_allowed);
  cudaFree(logits);
  cudaFree(ce);
  cudaFree(zz);
}

// The memory-bound kernels against copy bandwidth: norms, RoPE, SwiGLU, the
// embedding both ways, the cross-entropy chunk.
void bench_memory_rows(KernelBench& k) {
  const ModelConfig& m = k.m;
  const int64_t N = k.N, D = m.dim, F = m.ffn_dim, V = m.vocab_size, Q = m.qkv_dim();
  const cudaStream_t s = k.s;
  bf16* wn = dalloc<bf16>(D);
  fill_random_bf16(wn, D, 4, 1.0f);
  row_mem("residual+rmsnorm fwd", time_ms(s, k.it, [&] {
            cuda::residual_rmsnorm_forward(k.c, k.d, k.rstd, k.a, k.b, wn, N, D, 1e-5f, s);
          }), 8.0 * N * D);
  row_mem("rmsnorm bwd (accumulate)", time_ms(s, k.it, [&] {
            cuda::rmsnorm_backward(k.c, {k.dw, false, true}, k.scratch, k.a, k.b, wn, k.rstd, N, D, true, s);
          }), 8.0 * N * D);
  const RopeTable rope = rope_table(m, k.T);
  float* rc = dalloc<float>(rope.cos.size());
  float* rsn = dalloc<float>(rope.sin.size());
  check(cudaMemcpy(rc, rope.cos.data(), rope.cos.size() * 4, cudaMemcpyHostToDevice));
  check(cudaMemcpy(rsn, rope.sin.data(), rope.sin.size() * 4, cudaMemcpyHostToDevice));
  row_mem("rope (q and k)", time_ms(s, k.it, [&] {
            cuda::rope_apply(k.a, k.B, k.T, m.n_heads + m.n_kv_heads, Q, m.head_dim, rc, rsn, false, s);
          }), 4.0 * N * (m.n_heads + m.n_kv_heads) * m.head_dim);
  row_mem("swiglu fwd", time_ms(s, k.it, [&] { cuda::swiglu_forward(k.c, k.a, N, F, s); }), 6.0 * N * F);
  row_mem("swiglu bwd", time_ms(s, k.it, [&] { cuda::swiglu_backward(k.c, k.b, k.a, N, F, s); }), 10.0 * N * F);
  std::vector<int32_t> tok(N);
  for (int64_t i = 0; i < N; ++i) tok[i] = static_cast<int32_t>(hash_u64(5, i) % V);
  int32_t* dtok = dalloc<int32_t>(N);
  check(cudaMemcpy(dtok, tok.data(), N * 4, cudaMemcpyHostToDevice));
  bf16* table = dalloc<bf16>(V * D);
  row_mem("embedding fwd", time_ms(s, k.it, [&] { cuda::embedding_forward(k.c, dtok, table, N, D, s); }),
          4.0 * N * D);
  const cpu::TokenBuckets bk = cpu::bucket_tokens(tok.data(), N);
  int32_t *bp = dalloc<int32_t>(N), *bs = dalloc<int32_t>(bk.starts.size()), *bt = dalloc<int32_t>(bk.tokens.size());
  check(cudaMemcpy(bp, bk.positions.data(), N * 4, cudaMemcpyHostToDevice));
  check(cudaMemcpy(bs, bk.starts.data(), bk.starts.size() * 4, cudaMemcpyHostToDevice));
  check(cudaMemcpy(bt, bk.tokens.data(), bk.tokens.size() * 4, cudaMemcpyHostToDevice));
  float* dtable = dalloc<float>(V * D);
  row_mem("embedding bwd (deterministic)", time_ms(s, k.it, [&] {
            cuda::embedding_backward({dtable, false, true}, k.a, bp, bs, bt, static_cast<int64_t>(bk.tokens.size()), D, s);
          }), 2.0 * N * D + 8.0 * bk.tokens.size() * D);
  cudaFree(dtable);
  cudaFree(table);
  bench_cross_entropy_rows(k, dtok);
  for (void* p : {static_cast<void*>(wn), static_cast<void*>(rc), static_cast<void*>(rsn), static_cast<void*>(dtok),
                  static_cast<void*>(bp), static_cast<void*>(bs), static_cast<void*>(bt)})
    cudaFree(p);
}

// cuDNN's fused SDPA (causal per row, and masked per document when the run
// packs documents) and our fallback kernel. Masked per document, the FLOPs
// the unmasked figures count are still the yardstick: the masked rows show
// time, and the speed-up is in the ms.
void bench_attention_rows(KernelBench& k, const std::vector<int32_t>& docs) {
  const ModelConfig& m = k.m;
  const cudaStream_t s = k.s;
  const int it = k.it;
  bf16 *a = k.a, *b = k.b, *c = k.c, *d = k.d;
  const cpu::AttentionShape as{k.B, k.T, m.n_heads, m.n_kv_heads, m.head_dim};
  const double attn_fwd = 4.0 * k.B * m.n_heads * double(k.T) * k.T * m.head_dim / 2;
  float* lse = dalloc<float>(k.B * m.n_heads * k.T);
  const int64_t n_docs = static_cast<int64_t>(docs.size()) - 1;
  int32_t* dcu = docs.empty() ? nullptr : dalloc<int32_t>(docs.size());
  if (dcu) check(cudaMemcpy(dcu, docs.data(), docs.size() * 4, cudaMemcpyHostToDevice));
  if (cuda::CudnnAttention::available()) {
    try {
      cuda::CudnnAttention attn(as, s, !docs.empty());
      void* aws = dalloc<uint8_t>(attn.workspace_bytes());
      const double plain_ms = time_ms(s, it, [&] { attn.forward(c, lse, a, aws); });
      row_flops("attention fwd (cuDNN)", plain_ms, attn_fwd, kGemmTflops);
      const double plain_fb_ms = time_ms(s, it, [&] {
        attn.forward(c, lse, a, aws);
        attn.backward(d, b, a, c, lse, aws);
      });
      row_flops("attention fwd+bwd (cuDNN)", plain_fb_ms, 3.5 * attn_fwd, kGemmTflops);
      if (!docs.empty() && !attn.documents_ready()) {
        std::printf("  attention per document (cuDNN): unavailable: %s\n", attn.documents_error().c_str());
      } else if (!docs.empty()) {
        std::vector<int64_t> host(attn.document_bytes() / 8 + 1);
        const size_t used = attn.schedule_documents(docs.data(), n_docs, host.data());
        void* sched = dalloc<uint8_t>(used);
        check(cudaMemcpy(sched, host.data(), used, cudaMemcpyHostToDevice));
        const double doc_ms = time_ms(s, it, [&] { attn.forward_documents(c, lse, a, sched, aws); });
        const double doc_fb_ms = time_ms(s, it, [&] {
          attn.forward_documents(c, lse, a, sched, aws);
          attn.backward_documents(d, b, a, c, lse, sched, aws);
        });
        std::printf("  %-34s %9.3f ms  (causal per row %.3f ms: %+.1f%%)\n", "attention fwd per document (cuDNN)",
                    doc_ms, plain_ms, 100.0 * (doc_ms / plain_ms - 1.0));
        std::printf("  %-34s %9.3f ms  (causal per row %.3f ms: %+.1f%%)\n", "attention fwd+bwd per doc (cuDNN)",
                    doc_fb_ms, plain_fb_ms, 100.0 * (doc_fb_ms / plain_fb_ms - 1.0));
        cudaFree(sched);
      }
      cudaFree(aws);
    } catch (const Error& e) {
      std::printf("  attention (cuDNN): unavailable: %s\n", e.what());
    }
  }
  const int fit = k.T > 2048 ? 2 : it;  // the fallback is slow at long T
  row_flops("attention fwd (fallback)", time_ms(s, fit, [&] { cuda::attention_forward(c, lse, a, as, s); }),
            attn_fwd, kGemmTflops);
  const double fallback_ms = time_ms(s, fit, [&] {
    cuda::attention_forward(c, lse, a, as, s);
    cuda::attention_backward(d, k.scratch, b, a, c, lse, as, s);
  });
  row_flops("attention fwd+bwd (fallback)", fallback_ms, 3.5 * attn_fwd, kGemmTflops);
  if (dcu) {
    const double doc_ms = time_ms(s, fit, [&] {
      cuda::attention_forward(c, lse, a, as, s, dcu, n_docs);
      cuda::attention_backward(d, k.scratch, b, a, c, lse, as, s, dcu, n_docs);
    });
    std::printf("  %-34s %9.3f ms  (causal per row %.3f ms: %+.1f%%)\n", "attention fwd+bwd per doc (fallback)",
                doc_ms, fallback_ms, 100.0 * (doc_ms / fallback_ms - 1.0));
    cudaFree(dcu);
  }
  cudaFree(lse);
}

// AdamW over the model's parameters, in the run's precision and in the default one.
void bench_adamw_rows(const Config& cfg, cudaStream_t s) {
  const int64_t P = cfg.model.num_params();
  int64_t* bounds = dalloc<int64_t>(2);
  uint8_t* flags = dalloc<uint8_t>(1);
  const int64_t hb[2] = {0, P};
  const uint8_t hf[1] = {1};
  check(cudaMemcpy(bounds, hb, 16, cudaMemcpyHostToDevice));
  check(cudaMemcpy(flags, hf, 1, cudaMemcpyHostToDevice));
  float *norm = dalloc<float>(1), *ascratch = dalloc<float>(cuda::adamw_scratch_floats());
  const bool run_gb = use_bf16_grads(cfg);
  for (const bool master_on : {cfg.precision.master_weights, !cfg.precision.master_weights}) {
    const bool sb = master_on ? false : cfg.precision.optim_state_dtype == "bf16";
    const bool gb = master_on == cfg.precision.master_weights ? run_gb : false;
    bf16* p = dalloc<bf16>(P);
    float* master = master_on ? dalloc<float>(P) : nullptr;
    void* g = gb ? (void*)dalloc<bf16>(P) : (void*)dalloc<float>(P);
    void* mm = sb ? (void*)dalloc<bf16>(P) : (void*)dalloc<float>(P);
    void* vv = sb ? (void*)dalloc<bf16>(P) : (void*)dalloc<float>(P);
    int64_t step = 0;
    const double state_bytes = sb ? 8.0 : 16.0;
    const std::string name = std::string("adamw ") + (master_on ? "fp32 master" : "bf16 weights+SR") +
                             (sb ? ", bf16 m/v" : ", fp32 m/v") + (gb ? ", bf16 g" : ", fp32 g");
    row_mem(name.c_str(), time_ms(s, 5, [&] {
              cuda::adamw_step(p, master, g, gb, mm, vv, sb, P, {bounds, flags, 1},
                               {1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, ++step, 1.0f, 1}, norm, ascratch, s);
            }), P * ((gb ? 4.0 : 8.0) + 4.0 + state_bytes + (master ? 8.0 : 0.0)));
    row_mem(gb ? "grad sum of squares, bf16 g" : "grad sum of squares, fp32 g", time_ms(s, 5, [&] {
              cuda::grad_sum_squares(g, gb, P, norm, ascratch, s);
            }), P * (gb ? 2.0 : 4.0));
    row_mem((std::string("adamw update alone") + (gb ? ", bf16 g" : ", fp32 g")).c_str(), time_ms(s, 5, [&] {
              cuda::adamw_update_range(p, master, g, gb, mm, vv, sb, 0, P, {bounds, flags, 1},
                                       {1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, ++step, 1.0f, 1}, norm, s);
            }), P * ((gb ? 2.0 : 4.0) + 4.0 + state_bytes + (master ? 8.0 : 0.0)));
    cudaFree(p);
    cudaFree(master);
    cudaFree(g);
    cudaFree(mm);
    cudaFree(vv);
  }
  for (void* p : {static_cast<void*>(bounds), static_cast<void*>(flags), static_cast<void*>(norm),
                  static_cast<void*>(ascratch)})
    cudaFree(p);
}

void bench_kernels(const Config& cfg, int64_t B, int64_t T, const std::vector<int32_t>& docs) {
  KernelBench k(cfg, B, T);
  std::printf("\nper-kernel timings at N=%lld tokens (floors: bytes / %.1f TB/s copy bandwidth; "
              "FLOPs / %.0f TFLOP/s measured cuBLAS bf16)\n",
              static_cast<long long>(k.N), kCopyTBs, kGemmTflops);
  bench_gemm_rows(k);
  bench_memory_rows(k);
  bench_attention_rows(k, docs);
  k.free_activations();
  bench_adamw_rows(cfg, k.s);
  k.blas.reset();
  cudaFree(k.ws);
  cudaFree(k.rstd);
  cudaFree(k.scratch);
  cudaStreamDestroy(k.s);
}

double flops_per_token(const ModelConfig& m, int64_t T) {
  return 6.0 * (static_cast<double>(m.num_params()) - static_cast<double>(m.num_embedding_params())) +
         12.0 * m.n_layers * m.dim * static_cast<double>(T);
}

// FSDP over several GPUs through the same Backend the trainer drives.
int bench_fsdp(const Config& cfg, int steps, int warmup) {
  const ModelConfig& m = cfg.model;
  const int64_t B = cfg.train.micro_batch_size, T = cfg.train.seq_len, accum = cfg.grad_accum_steps();
  auto backend = make_backend(cfg, B, T);
  {
    std::vector<float> params(backend->layout().total());
    init_params(params.data(), backend->layout(), m, 1);
    backend->set_params(params.data());
  }
  std::vector<int32_t> x(B * T), y(B * T);
  const double tokens = static_cast<double>(B * T * accum);
  auto one_step = [&]() {
    backend->zero_grads();
    for (int64_t a = 0; a < accum; ++a) {
      for (int64_t i = 0; i < B * T; ++i) {  // a different micro-batch per GPU
        x[i] = static_cast<int32_t>(hash_u64(11 + a, i) % m.vocab_size);
        y[i] = static_cast<int32_t>(hash_u64(12 + a, i) % m.vocab_size);
      }
      backend->run(x.data(), y.data(), B, 2e-4f, static_cast<float>(1.0 / tokens), true);
    }
    return backend->step(1e-4);
  };
  for (int i = 0; i < warmup; ++i) one_step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) one_step();
  const double step_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
  int gpus = static_cast<int>(cfg.train.gpus);
  if (gpus == 0) gpus = cuda::device_count();
  const double tok_s = tokens / step_s, flops_tok = flops_per_token(m, T);
  const double tflops = flops_tok * tok_s / 1e12;
  std::printf("bench_step: %s\n", cfg.source.c_str());
  std::printf("  backend: %s\n", backend->describe().c_str());
  std::printf("  model: %.3fB parameters, %lld layers; step: %lld micro-batches of %lld x %lld tokens over %d GPUs\n",
              m.num_params() / 1e9, (long long)m.n_layers, (long long)accum, (long long)B, (long long)T, gpus);
  std::printf("  %d steps after %d warm-up: %.2f ms/step, %.0f tokens/s (%.0f per GPU), %.1f TFLOP/s per GPU, "
              "MFU %.1f%%\n", steps, warmup, step_s * 1e3, tok_s, tok_s / gpus, tflops / gpus,
              100.0 * tflops / gpus / kPeakTflops);
  std::printf("  (MFU per GPU: FLOPs/token = %.3g against %.0f TFLOP/s, H100/H200 dense bf16; wall clock)\n",
              flops_tok, kPeakTflops);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::vector<std::string> overrides;
  int steps = 10, warmup = 3;
  bool kernels = true;
  double doc_len = 0;  // 0: no documents
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_step: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") config_path = value();
    else if (a == "--set") overrides.push_back(value());
    else if (a == "--steps") steps = std::atoi(value().c_str());
    else if (a == "--warmup") warmup = std::atoi(value().c_str());
    else if (a == "--no-kernels") kernels = false;
    else if (a == "--ce-rowwise") cuda::allow_cluster_cross_entropy(false);  // the training step's loss too
    else if (a == "--doc-len") doc_len = std::atof(value().c_str());
    else {
      std::fprintf(stderr,
                   "usage: bench_step [--config FILE] [--set k=v]... [--steps N] [--warmup N] [--no-kernels] "
                   "[--doc-len MEAN] [--ce-rowwise]\n");
      return 2;
    }
    if (a == "--doc-len" && !(doc_len >= 1)) {
      std::fprintf(stderr, "bench_step: --doc-len needs a mean document length of at least 1 token\n");
      return 2;
    }
  }
  try {
    overrides.insert(overrides.begin(), "train.device=cuda");
    const Config cfg = load_config(config_path, overrides);
    if (cuda::device_count() == 0) fail("no CUDA GPU: ", cuda::describe_device(0));
    if (cfg.train.gpus != 1 && doc_len > 0)
      fail("--doc-len times one GPU (train.gpus = 1); the FSDP bench runs causal per row only");
    if (cfg.train.gpus != 1) return bench_fsdp(cfg, steps, warmup);
    const ModelConfig& m = cfg.model;
    const int64_t B = cfg.train.micro_batch_size, T = cfg.train.seq_len, accum = cfg.grad_accum_steps();
    CudaOptions o = cuda_options(cfg);
    o.doc_masking = doc_len > 0;
    LlamaCuda model(m, o, B, T);
    std::vector<float> params(model.layout().total());
    init_params(params.data(), model.layout(), m, 1);
    model.upload_params(params.data());
    params = {};
    std::vector<int32_t> x(B * T), y(B * T);
    for (int64_t i = 0; i < B * T; ++i) {
      x[i] = static_cast<int32_t>(hash_u64(11, i) % m.vocab_size);
      y[i] = static_cast<int32_t>(hash_u64(12, i) % m.vocab_size);
    }
    const double tokens = static_cast<double>(B * T * accum);
    const std::vector<int32_t> docs = doc_len > 0 ? packed_documents(B, T, doc_len, 21) : std::vector<int32_t>{};
    int64_t step_no = 0;
    // One step; cu = nullptr: causal per row, else masked per document.
    auto one_step = [&](const std::vector<int32_t>* cu) {
      model.zero_grads();
      for (int64_t a = 0; a < accum; ++a)
        model.forward_backward(x.data(), y.data(), B, 2e-4f, 1.0f / tokens, true, nullptr,
                               cu ? cu->data() : nullptr, cu ? static_cast<int64_t>(cu->size()) - 1 : 0);
      return model.optimizer_step(1e-4, 0.9, 0.95, 1e-8, 0.1, 1.0, ++step_no, 1);
    };
    // Median seconds per step after warm-up, with one pair of events per step
    // (each step ends in the optimizer's one host synchronisation): the median
    // is what the PyTorch yardstick reports. The spread goes to `spread`.
    std::string spread;
    auto time_steps = [&](const std::vector<int32_t>* cu) {
      for (int i = 0; i < warmup; ++i) one_step(cu);
      std::vector<cudaEvent_t> ev(steps + 1);
      for (cudaEvent_t& e : ev) check(cudaEventCreate(&e));
      check(cudaEventRecord(ev[0], model.stream()));
      for (int i = 0; i < steps; ++i) {
        one_step(cu);
        check(cudaEventRecord(ev[i + 1], model.stream()));
      }
      check(cudaEventSynchronize(ev[steps]));
      std::vector<double> ms(steps);
      double mean = 0;
      for (int i = 0; i < steps; ++i) {
        float t = 0;
        check(cudaEventElapsedTime(&t, ev[i], ev[i + 1]));
        ms[i] = t;
        mean += t / steps;
      }
      for (cudaEvent_t& e : ev) cudaEventDestroy(e);
      std::sort(ms.begin(), ms.end());
      char line[128];
      std::snprintf(line, sizeof line, "mean %.2f, min %.2f, max %.2f", mean, ms.front(), ms.back());
      spread = line;
      return ms[steps / 2] / 1e3;
    };
    const double step_s = time_steps(nullptr);
    size_t free_b = 0, total_b = 0;
    check(cudaMemGetInfo(&free_b, &total_b));
    const double n_params = static_cast<double>(m.num_params());
    const double flops_tok = flops_per_token(m, T);
    const double tok_s = tokens / step_s;
    const double tflops = flops_tok * tok_s / 1e12;
    std::printf("bench_step: %s\n", cfg.source.c_str());
    std::printf("  device: %s\n", cuda::describe_device(0).c_str());
    std::printf("  model: %.3fB parameters, %lld layers, dim %lld, ffn %lld, heads %lld/%lld, vocab %lld\n",
                n_params / 1e9, (long long)m.n_layers, (long long)m.dim, (long long)m.ffn_dim,
                (long long)m.n_heads, (long long)m.n_kv_heads, (long long)m.vocab_size);
    std::printf("  step: %lld x %lld tokens x %lld accum; attention: %s; master weights %s; AdamW state %s; "
                "gradients %s; blocks' linear layers %s; classifier %s; %.1f GiB allocated, %.1f GiB of %.1f GiB in "
                "use on the GPU\n",
                (long long)B, (long long)T, (long long)accum, model.attention_impl().c_str(),
                o.master_weights ? "fp32" : "off", cfg.precision.optim_state_dtype.c_str(),
                o.grads_bf16 ? "bf16" : "fp32",
                !o.fp8     ? "bf16"
                : o.fp8_dw ? "FP8 (forward, input and weight gradients)"
                           : "FP8 (forward and input gradients; weight gradients bf16)",
                o.fp8_classifier ? "FP8" : "bf16", model.device_bytes() / double(1 << 30),
                (total_b - free_b) / double(1 << 30), total_b / double(1 << 30));
    if (const std::string plans = model.attention_plans(); !plans.empty()) std::printf("  %s\n", plans.c_str());
    std::printf("  recompute plan%s: %s\n", o.recompute.automatic ? " (auto)" : "",
                model.memory_plan().describe().c_str());
    std::printf("  %s\n", model.gemm_tuning().c_str());
    std::printf("  %d steps after %d warm-up: median %.2f ms/step (%s), %.0f tokens/s, %.1f TFLOP/s, MFU %.1f%%\n",
                steps, warmup, step_s * 1e3, spread.c_str(), tok_s, tflops, 100.0 * tflops / kPeakTflops);
    std::printf("  (MFU: FLOPs/token = 6*(N - input-embedding params) + 12*L*d*T = %.3g, against %.0f TFLOP/s, "
                "H100/H200 dense bf16)\n", flops_tok, kPeakTflops);
    // One more step with phase events: where the time goes (the last
    // micro-batch's phases, and the optimizer).
    model.set_phase_timing(true);
    one_step(nullptr);
    model.set_phase_timing(false);
    const std::vector<float> ph = model.phase_ms();
    std::printf("  phases of one step (last micro-batch):");
    for (int p = 0; p < LlamaCuda::kPhases; ++p) std::printf("%s %s %.2f ms", p ? ";" : "", LlamaCuda::phase_name(p), ph[p]);
    std::printf("\n");
    if (!docs.empty()) {
      print_documents(docs, doc_len);
      const double doc_s = time_steps(&docs);
      std::printf("  masked per document: median %.2f ms/step, %.0f tokens/s (causal per row %.2f ms/step: %+.2f%%; "
                  "MFU counted with the causal FLOPs %.1f%%)\n",
                  doc_s * 1e3, tokens / doc_s, step_s * 1e3, 100.0 * (doc_s / step_s - 1.0),
                  100.0 * flops_tok * tokens / doc_s / 1e12 / kPeakTflops);
    }
    if (kernels) bench_kernels(cfg, B, T, docs);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_step: error: %s\n", e.what());
    return 1;
  }
}
