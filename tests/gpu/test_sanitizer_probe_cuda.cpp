// A probe for compute-sanitizer's initcheck, meant to be run under it:
//
//   compute-sanitizer --tool initcheck build/intellect_gpu_tests --gtest_filter='SanitizerProbe.*'
//
// initcheck reported reads of uninitialized memory in CudaModel.LogitsAndGradientsMatchCpu
// (B=2, T=48, 4/2 heads of 16) by the fallback attention, RoPE and the dO·O kernel, and
// only there. Every one of those reads is of a row the step had written in stream order:
// the QKV projection's output (RoPE rewrites q and k, so v is what attention reads unwritten)
// and the O projection's input gradient (dO). Both come from cuBLAS GEMMs. This test runs
// exactly those two GEMMs at the model test's shapes into fresh, never-memset buffers and
// feeds our kernels from them, as the model does. Reports here, with the results right,
// mean initcheck did not see cuBLAS's writes (kernels that store through the Hopper tensor
// memory accelerator, say), not that our kernels read memory nobody wrote; no reports here
// mean the cause is elsewhere in the model. Without the sanitizer it is a plain correctness
// test against the CPU.
#include "gpu_util.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/rope.h"

namespace intellect {
namespace {

using namespace test;

// cudaMalloc without the poisoning memset of DeviceBuffer: initcheck sees these as
// uninitialized until a kernel or copy writes them.
template <class T>
struct Fresh {
  T* p = nullptr;
  explicit Fresh(size_t n) { EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess); }
  ~Fresh() { cudaFree(p); }
  void upload(const std::vector<T>& v) { cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice); }
  std::vector<T> download(size_t n) const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
};

TEST(SanitizerProbe, CublasOutputsReadByRopeAndAttention) {
  REQUIRE_GPU();
  const int64_t B = 2, T = 48, H = 4, KV = 2, hd = 16, D = 64, N = B * T;
  const cpu::AttentionShape s{B, T, H, KV, hd};
  const int64_t QS = s.qkv_stride(), OS = s.out_stride();
  ModelConfig c;
  c.head_dim = hd;
  const RopeTable tab = rope_table(c, T);
  const auto x = randn_bf16(N * D, 41, 0.5f), wqkv = randn_bf16(QS * D, 42, 0.2f),
             g = randn_bf16(N * D, 43), wo = randn_bf16(D * OS, 44, 0.2f);
  Fresh<uint8_t> ws(cuda::Blas::kWorkspaceBytes);
  cuda::Blas blas(nullptr, ws.p, cuda::Blas::kWorkspaceBytes);
  Fresh<bf16> dx(x.size()), dwqkv(wqkv.size()), dg(g.size()), dwo(wo.size());
  dx.upload(to_bf16(x));
  dwqkv.upload(to_bf16(wqkv));
  dg.upload(to_bf16(g));
  dwo.upload(to_bf16(wo));
  Fresh<float> dcos(tab.cos.size()), dsin(tab.sin.size());
  dcos.upload(tab.cos);
  dsin.upload(tab.sin);

  // The model's QKV projection, RoPE on q and k, attention; the O projection's input
  // gradient as dO, attention backward (its first kernel sums dO·O).
  Fresh<bf16> qkv(N * QS), out(N * OS), dout(N * OS), dqkv(N * QS);
  Fresh<float> lse(B * H * T), scratch(B * H * T);
  blas.forward(qkv.p, dx.p, dwqkv.p, N, QS, D);
  cuda::rope_apply(qkv.p, B, T, H + KV, QS, hd, dcos.p, dsin.p, false, nullptr);
  cuda::attention_forward(out.p, lse.p, qkv.p, s, nullptr);
  blas.backward(dout.p, cuda::GradOut{}, dg.p, nullptr, dwo.p, N, D, OS);
  cuda::attention_backward(dqkv.p, scratch.p, dout.p, qkv.p, out.p, lse.p, s, nullptr);

  std::vector<float> rq(N * QS), ro(N * OS), rl(B * H * T), rdo(N * OS), rd(N * QS);
  cpu::matmul_forward(rq.data(), x.data(), wqkv.data(), N, QS, D);
  cpu::rope_apply(rq.data(), B, T, H + KV, QS, tab, false);
  rq = round_bf16(rq);  // the GPU's qkv is bf16
  cpu::attention_forward(ro.data(), rl.data(), rq.data(), s);
  cpu::matmul_backward(rdo.data(), nullptr, g.data(), nullptr, wo.data(), N, D, OS);
  rdo = round_bf16(rdo);
  cpu::attention_backward(rd.data(), rdo.data(), rq.data(), ro.data(), rl.data(), s);
  EXPECT_LT(rel_error(to_f32(out.download(N * OS)), ro), 3e-2);
  EXPECT_LT(rel_error(to_f32(dqkv.download(N * QS)), rd), 5e-2);
}

}  // namespace
}  // namespace intellect
