// Every CUDA kernel against its CPU twin on fresh random inputs, at several
// shapes including odd ones, with poisoned outputs. Labelled `gpu`: skipped
// with a message where there is no GPU.
#include <algorithm>

#include "gpu_util.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/attention_cudnn.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/fp8.h"
#include "kernels/grad_shard.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace intellect {
namespace {

using namespace test;

TEST(CudaKernels, Embedding) {
  REQUIRE_GPU();
  for (auto [N, V, D] : std::vector<std::array<int64_t, 3>>{{1, 3, 8}, {37, 11, 13}, {512, 300, 256}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " D=" << D);
    auto table = randn_bf16(V * D, 1);
    std::vector<int32_t> tok(N);
    for (int64_t i = 0; i < N; ++i) tok[i] = static_cast<int32_t>(hash_u64(2, i) % V);
    DeviceBuffer<bf16> d_table(V * D), d_out(N * D);
    DeviceBuffer<int32_t> d_tok(N);
    d_table.upload(to_bf16(table));
    d_tok.upload(tok);
    cuda::embedding_forward(d_out.get(), d_tok.get(), d_table.get(), N, D, nullptr);
    std::vector<float> ref(N * D);
    cpu::embedding_forward(ref.data(), tok.data(), table.data(), N, V, D);
    EXPECT_EQ(rel_error(to_f32(d_out.download()), ref), 0.0);

    auto g = randn_bf16(N * D, 3);
    const cpu::TokenBuckets b = cpu::bucket_tokens(tok.data(), N);
    DeviceBuffer<int32_t> pos(N), starts(b.starts.size()), btok(b.tokens.size());
    pos.upload(b.positions);
    starts.upload(b.starts);
    btok.upload(b.tokens);
    DeviceBuffer<bf16> d_g(N * D);
    d_g.upload(to_bf16(g));
    auto init = randn(V * D, 4);
    DeviceBuffer<float> d_dt(V * D);
    d_dt.upload(init);
    cuda::embedding_backward({d_dt.get(), false, true}, d_g.get(), pos.get(), starts.get(), btok.get(),
                             static_cast<int64_t>(b.tokens.size()), D, nullptr);
    std::vector<float> dref = init;
    cpu::embedding_backward(dref.data(), g.data(), tok.data(), N, D);
    EXPECT_LT(rel_error(d_dt.download(), dref), 1e-5);
    // A bf16 table (precision.grad_dtype bf16): summed in fp32, rounded once per row.
    DeviceBuffer<bf16> d_dt16(V * D);
    d_dt16.upload(to_bf16(init));
    cuda::embedding_backward({d_dt16.get(), true, true}, d_g.get(), pos.get(), starts.get(), btok.get(),
                             static_cast<int64_t>(b.tokens.size()), D, nullptr);
    std::vector<float> dref16 = round_bf16(init);
    cpu::embedding_backward(dref16.data(), g.data(), tok.data(), N, D);
    EXPECT_LT(rel_error(to_f32(d_dt16.download()), dref16), kBf16Tol);
  }
}

TEST(CudaKernels, ResidualRmsnormForwardAndBackward) {
  REQUIRE_GPU();
  for (auto [N, D] : std::vector<std::array<int64_t, 2>>{{1, 8}, {7, 13}, {64, 4096}, {33, 1000}, {37, 512}, {1001, 4096}, {9000, 256}, {2500, 4096}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " D=" << D);
    const float eps = 1e-5f;
    auto a = randn_bf16(N * D, 5), b = randn_bf16(N * D, 6), w = randn_bf16(D, 7, 0.2f);
    for (auto& x : w) x = __bfloat162float(__float2bfloat16(x + 1.0f));
    DeviceBuffer<bf16> da(N * D), db(N * D), dw(D), dsum(N * D), dnorm(N * D);
    DeviceBuffer<float> drstd(N);
    da.upload(to_bf16(a));
    db.upload(to_bf16(b));
    dw.upload(to_bf16(w));
    cuda::residual_rmsnorm_forward(dsum.get(), dnorm.get(), drstd.get(), da.get(), db.get(), dw.get(), N, D,
                                   eps, nullptr);
    std::vector<float> sum(N * D), ref(N * D), rstd(N);
    for (int64_t i = 0; i < N * D; ++i) sum[i] = __bfloat162float(__float2bfloat16(a[i] + b[i]));
    cpu::rmsnorm_forward(ref.data(), rstd.data(), sum.data(), w.data(), N, D, eps);
    EXPECT_EQ(rel_error(to_f32(dsum.download()), sum), 0.0);
    EXPECT_LT(rel_error(to_f32(dnorm.download()), ref), kBf16Tol);
    EXPECT_LT(rel_error(drstd.download(), rstd), 1e-4);
    // without the residual add
    DeviceBuffer<bf16> dnorm2(N * D);
    cuda::residual_rmsnorm_forward(nullptr, dnorm2.get(), drstd.get(), da.get(), nullptr, dw.get(), N, D, eps,
                                   nullptr);
    std::vector<float> ref2(N * D), rstd2(N);
    cpu::rmsnorm_forward(ref2.data(), rstd2.data(), a.data(), w.data(), N, D, eps);
    EXPECT_LT(rel_error(to_f32(dnorm2.download()), ref2), kBf16Tol);

    // backward, accumulating into an existing gradient
    auto g = randn_bf16(N * D, 8), dx0 = randn_bf16(N * D, 9);
    DeviceBuffer<bf16> dg(N * D), ddx(N * D);
    DeviceBuffer<float> ddw(D), scratch(cuda::rmsnorm_backward_scratch_floats(N, D));
    dg.upload(to_bf16(g));
    ddx.upload(to_bf16(dx0));
    std::vector<float> dw0(D, 0.5f);
    ddw.upload(dw0);
    // drstd holds rstd of `a` from the second forward: redo the first.
    cuda::residual_rmsnorm_forward(dsum.get(), dnorm.get(), drstd.get(), da.get(), db.get(), dw.get(), N, D,
                                   eps, nullptr);
    cuda::rmsnorm_backward(ddx.get(), {ddw.get(), false, true}, scratch.get(), dg.get(), dsum.get(), dw.get(),
                           drstd.get(), N, D, true, nullptr);
    std::vector<float> rdx = dx0, rdw = dw0;
    cpu::rmsnorm_backward(rdx.data(), rdw.data(), g.data(), sum.data(), w.data(), rstd.data(), N, D, true);
    EXPECT_LT(rel_error(to_f32(ddx.download()), rdx), kBf16Tol);
    EXPECT_LT(rel_error(ddw.download(), rdw), 1e-3);
    // backward, writing a fresh gradient (the output poisoned first)
    DeviceBuffer<bf16> ddx2(N * D);
    ddx2.upload(std::vector<bf16>(N * D, __float2bfloat16(NAN)));
    cuda::rmsnorm_backward(ddx2.get(), {ddw.get(), false, true}, scratch.get(), dg.get(), dsum.get(), dw.get(),
                           drstd.get(), N, D, false, nullptr);
    std::vector<float> rdx2(N * D, 0.0f);
    cpu::rmsnorm_backward(rdx2.data(), rdw.data(), g.data(), sum.data(), w.data(), rstd.data(), N, D, false);
    EXPECT_LT(rel_error(to_f32(ddx2.download()), rdx2), kBf16Tol);
    EXPECT_LT(rel_error(ddw.download(), rdw), 1e-3);
    // a bf16 weight gradient overwritten (poisoned first), as the first
    // micro-batch after zero_grads() writes it
    DeviceBuffer<bf16> ddw16(D);
    ddw16.upload(std::vector<bf16>(D, __float2bfloat16(NAN)));
    cuda::rmsnorm_backward(ddx2.get(), {ddw16.get(), true, false}, scratch.get(), dg.get(), dsum.get(), dw.get(),
                           drstd.get(), N, D, false, nullptr);
    std::vector<float> rdw16(D, 0.0f);
    cpu::rmsnorm_backward(rdx2.data(), rdw16.data(), g.data(), sum.data(), w.data(), rstd.data(), N, D, false);
    EXPECT_LT(rel_error(to_f32(ddw16.download()), rdw16), kBf16Tol);
  }
}

TEST(CudaKernels, Rope) {
  REQUIRE_GPU();
  for (auto [B, T, H, hd] : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 2}, {2, 9, 3, 16}, {1, 64, 12, 128}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << B << " T=" << T << " H=" << H << " hd=" << hd);
    ModelConfig c;
    c.head_dim = hd;
    c.rope_theta = 500000.0;
    c.rope_scaling.type = "llama3";
    c.rope_scaling.original_max_position = 16;
    const RopeTable tab = rope_table(c, T);
    const int64_t stride = H * hd + 6;
    auto x = randn_bf16(B * T * stride, 10);
    DeviceBuffer<bf16> dx(x.size());
    DeviceBuffer<float> dcos(tab.cos.size()), dsin(tab.sin.size());
    dx.upload(to_bf16(x));
    dcos.upload(tab.cos);
    dsin.upload(tab.sin);
    for (bool inverse : {false, true}) {
      cuda::rope_apply(dx.get(), B, T, H, stride, hd, dcos.get(), dsin.get(), inverse, nullptr);
      std::vector<float> ref = x;
      cpu::rope_apply(ref.data(), B, T, H, stride, tab, inverse);
      EXPECT_LT(rel_error(to_f32(dx.download()), ref), kBf16Tol);
      dx.upload(to_bf16(x));
    }
  }
}

TEST(CudaKernels, Swiglu) {
  REQUIRE_GPU();
  for (auto [N, F] : std::vector<std::array<int64_t, 2>>{{1, 1}, {7, 13}, {128, 1024}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " F=" << F);
    auto gu = randn_bf16(N * 2 * F, 11, 2.0f), g = randn_bf16(N * F, 12);
    DeviceBuffer<bf16> dgu(gu.size()), dout(N * F), dg(N * F), ddgu(gu.size());
    dgu.upload(to_bf16(gu));
    dg.upload(to_bf16(g));
    cuda::swiglu_forward(dout.get(), dgu.get(), N, F, nullptr);
    cuda::swiglu_backward(ddgu.get(), dg.get(), dgu.get(), N, F, nullptr);
    std::vector<float> ref(N * F), dref(gu.size());
    cpu::swiglu_forward(ref.data(), gu.data(), N, F);
    cpu::swiglu_backward(dref.data(), g.data(), gu.data(), N, F);
    EXPECT_LT(rel_error(to_f32(dout.download()), ref), kBf16Tol);
    EXPECT_LT(rel_error(to_f32(ddgu.download()), dref), kBf16Tol);
  }
}

// Runs the launcher (or, with `rowwise`, the fallback kernel alone) on logits
// placed `offset` elements into their device buffer and the fp32 copy (if
// `with_f32`) `f32_offset` floats into its own, so misaligned pointers can be
// asked for; checks that the launcher picks `expected` and that the losses,
// dlogits and the copy match cpu::cross_entropy. Returns dlogits and the CPU's.
std::pair<std::vector<float>, std::vector<float>> run_cross_entropy(
    const std::vector<float>& logits, const std::vector<int32_t>& tgt, int64_t N, int64_t V, float zw,
    cuda::CrossEntropyKernel expected, bool rowwise = false, bool with_f32 = true, int64_t offset = 0,
    int64_t f32_offset = 0) {
  int64_t valid = 0;
  for (auto t : tgt) valid += t >= 0;
  const float scale = 1.0f / std::max<int64_t>(valid, 1);
  DeviceBuffer<bf16> dl(N * V + offset);
  DeviceBuffer<float> ce(N), z(N), f32(with_f32 ? N * V + f32_offset : 0);
  DeviceBuffer<int32_t> dt(N);
  DeviceBuffer<double> sums(3);
  std::vector<bf16> host(N * V + offset, __float2bfloat16(0.0f));
  std::copy_n(to_bf16(logits).begin(), N * V, host.begin() + offset);
  dl.upload(host);
  dt.upload(tgt);
  cudaMemset(sums.get(), 0, 3 * sizeof(double));
  bf16* l = dl.get() + offset;
  float* lf = with_f32 ? f32.get() + f32_offset : nullptr;
  EXPECT_EQ(cuda::cross_entropy_kernel_for(N, V, l, lf), expected);
  if (rowwise)
    cuda::cross_entropy_forward_backward_rowwise(l, ce.get(), z.get(), lf, dt.get(), N, V, zw, scale, nullptr);
  else
    cuda::cross_entropy_forward_backward(l, ce.get(), z.get(), lf, dt.get(), N, V, zw, scale, nullptr);
  cuda::accumulate_loss(sums.get(), ce.get(), z.get(), dt.get(), N, nullptr);
  std::vector<float> dref(N * V);
  const cpu::LossSums ref = cpu::cross_entropy(logits.data(), dref.data(), tgt.data(), N, V, zw, scale);
  if (with_f32) {
    const auto copy = f32.download();
    EXPECT_EQ(rel_error(std::vector<float>(copy.begin() + f32_offset, copy.end()), logits), 0.0);
  }
  const auto s = sums.download();
  EXPECT_NEAR(s[0], ref.ce, 1e-4 * (1 + ref.ce));
  EXPECT_NEAR(s[1], ref.z, 1e-4 * (1 + ref.z));
  EXPECT_EQ(s[2], static_cast<double>(ref.n_valid));
  const auto out = to_f32(dl.download());
  std::vector<float> d(out.begin() + offset, out.end());
  EXPECT_LT(rel_error(d, dref), kBf16Tol);
  return {d, dref};
}

std::vector<int32_t> some_targets(int64_t N, int64_t V, uint64_t seed) {
  std::vector<int32_t> tgt(N);
  for (int64_t i = 0; i < N; ++i) tgt[i] = static_cast<int32_t>(hash_u64(seed, i) % V);
  if (N > 2) tgt[1] = -1;  // an ignored row
  return tgt;
}

// The cluster kernel is the launcher's default (cross_entropy.h); these
// tests make sure of it for their scope, whatever an earlier test left.
struct ClusterCrossEntropyAllowed {
  const bool before = cuda::cluster_cross_entropy_allowed();
  ClusterCrossEntropyAllowed() { cuda::allow_cluster_cross_entropy(true); }
  ~ClusterCrossEntropyAllowed() { cuda::allow_cluster_cross_entropy(before); }
};

TEST(CudaKernels, CrossEntropyLauncherTakesTheClusterKernelUnlessDisallowed) {
  REQUIRE_GPU();
  using K = cuda::CrossEntropyKernel;
  const auto logits = randn_bf16(2 * 128256, 3, 1.0f);
  const auto tgt = some_targets(2, 128256, 4);
  ASSERT_TRUE(cuda::cluster_cross_entropy_allowed());
  run_cross_entropy(logits, tgt, 2, 128256, 1e-2f, K::kCluster);
  cuda::allow_cluster_cross_entropy(false);
  run_cross_entropy(logits, tgt, 2, 128256, 1e-2f, K::kRowwise);
  cuda::allow_cluster_cross_entropy(true);
}

TEST(CudaKernels, CrossEntropyWithZLoss) {
  REQUIRE_GPU();
  ClusterCrossEntropyAllowed allow;
  using K = cuda::CrossEntropyKernel;
  // V % 8 != 0 (the rowwise kernel's scalar path); clusters of 1 block (a row
  // shorter than the block's 32768 slots: 1025 vectors, a thread with a single
  // vector), 2 blocks (the second part-filled), 3, 4 (Llama-3's 128256) and 8
  // (the largest row the registers hold); one vector past it (the rowwise
  // kernel). Each shape through the launcher and through the rowwise kernel.
  for (auto [N, V] : std::vector<std::array<int64_t, 2>>{{1, 2}, {9, 258}, {5, 2048}, {3, 8200}, {4, 16400},
                                                         {3, 40000}, {3, 70000}, {16, 128256}, {3, 262144},
                                                         {3, 262152}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V);
    const auto logits = randn_bf16(N * V, 13, 3.0f);
    const auto tgt = some_targets(N, V, 14);
    const K expected = V % 8 == 0 && V <= cuda::kClusterMaxVocab ? K::kCluster : K::kRowwise;
    run_cross_entropy(logits, tgt, N, V, 1e-2f, expected);
    {
      SCOPED_TRACE("rowwise kernel");
      run_cross_entropy(logits, tgt, N, V, 1e-2f, expected, /*rowwise=*/true);
    }
    {
      SCOPED_TRACE("no fp32 copy (an ignored row is not read)");
      run_cross_entropy(logits, tgt, N, V, 1e-2f, expected, false, /*with_f32=*/false);
    }
  }
  EXPECT_EQ(cuda::kClusterMaxVocab, 262144);  // the bound the shapes above straddle
}

TEST(CudaKernels, CrossEntropyMisalignedTakesTheRowwiseKernel) {
  REQUIRE_GPU();
  ClusterCrossEntropyAllowed allow;
  using K = cuda::CrossEntropyKernel;
  const int64_t N = 4, V = 128256;
  const auto logits = randn_bf16(N * V, 15, 3.0f);
  const auto tgt = some_targets(N, V, 16);
  {
    SCOPED_TRACE("logits 8 bytes off 16-byte alignment");
    run_cross_entropy(logits, tgt, N, V, 1e-2f, K::kRowwise, false, true, /*offset=*/4);
  }
  {
    SCOPED_TRACE("fp32 copy 4 bytes off");
    run_cross_entropy(logits, tgt, N, V, 1e-2f, K::kRowwise, false, true, 0, /*f32_offset=*/1);
  }
  {
    SCOPED_TRACE("aligned: the cluster kernel");
    run_cross_entropy(logits, tgt, N, V, 1e-2f, K::kCluster, false, true, 8, 4);
  }
}

// Ties of the max go to the lowest index (max()'s gradient, the z-loss's,
// goes there alone): ties in one bf16 pair, across a pair's halves, between
// threads and between the blocks of a cluster, one at the target, and rows
// where the max is everywhere or all but one entry. z_weight is large so a
// misplaced z-gradient (2·z_weight·max·grad_scale) is far outside tolerance.
TEST(CudaKernels, CrossEntropyTiesGoToTheLowestIndex) {
  REQUIRE_GPU();
  ClusterCrossEntropyAllowed allow;
  for (int64_t V : {int64_t(2048), int64_t(128256), int64_t(130)}) {  // 1 block, 4 blocks, rowwise
    SCOPED_TRACE(::testing::Message() << "V=" << V);
    const std::vector<std::vector<int64_t>> ties = {
        {V - 2, V - 1},                // a pair's two halves
        {3, 4, V - 1},                 // high half of a pair before low half of the next
        {V / 2 + 8, V / 2},            // listed highest first
        {9, 17, std::min<int64_t>(9 + 3 * 32768, V - 9)},  // neighbouring threads; block 3 of 4
        {V / 3, 2 * V / 3},            // the target is the second: the first gets the z-gradient
        {V / 5, V / 4},                // the target is the first
    };
    const int64_t N = static_cast<int64_t>(ties.size()) + 2;
    auto logits = round_bf16(randn(N * V, 17, 1.0f));
    std::vector<int32_t> tgt = some_targets(N, V, 18);
    tgt[1] = 7;  // the ignored row is elsewhere
    tgt[N - 1] = -1;
    for (size_t r = 0; r < ties.size(); ++r)
      for (int64_t i : ties[r]) logits[r * V + i] = 10.0f;
    tgt[4] = static_cast<int32_t>(2 * V / 3);
    tgt[5] = static_cast<int32_t>(V / 5);
    // Row 6: every entry equal; row 7 (ignored): all equal but the last.
    for (int64_t i = 0; i < V; ++i) logits[6 * V + i] = logits[7 * V + i] = 2.0f;
    logits[7 * V + V - 1] = 3.0f;
    const auto expected = V % 8 == 0 ? cuda::CrossEntropyKernel::kCluster : cuda::CrossEntropyKernel::kRowwise;
    const auto [d, dref] = run_cross_entropy(logits, tgt, N, V, 0.1f, expected);
    for (size_t r = 0; r < ties.size(); ++r)
      for (int64_t i : ties[r]) {
        SCOPED_TRACE(::testing::Message() << "row " << r << " index " << i);
        EXPECT_NEAR(d[r * V + i], dref[r * V + i], 1e-2 * std::fabs(dref[r * V + i]) + 1e-6);
      }
    for (int64_t i : {int64_t(0), int64_t(1), V - 1})
      EXPECT_NEAR(d[6 * V + i], dref[6 * V + i], 1e-2 * std::fabs(dref[6 * V + i]));
  }
}

class CudaAdamW : public ::testing::TestWithParam<std::pair<bool, bool>> {};

TEST_P(CudaAdamW, MatchesCpuWithClipping) {
  REQUIRE_GPU();
  const auto [master, state_bf16] = GetParam();
  const int64_t n = 100003;
  auto p = randn_bf16(n, 15), g = randn(n, 16, 3.0f);
  // Two ranges: the first 1000 elements without decay.
  std::vector<int64_t> bounds = {0, 1000, n};
  std::vector<uint8_t> flags = {0, 1};
  DeviceBuffer<int64_t> dbounds(3);
  DeviceBuffer<uint8_t> dflags(2);
  dbounds.upload(bounds);
  dflags.upload(flags);
  DeviceBuffer<bf16> dp(n);
  DeviceBuffer<float> dmaster(n), dg(n), norm(1), scratch(cuda::adamw_scratch_floats());
  DeviceBuffer<float> m32(n), v32(n);
  DeviceBuffer<bf16> m16(n), v16(n);
  dp.upload(to_bf16(p));
  dmaster.upload(p);
  dg.upload(g);
  cudaMemset(m32.get(), 0, n * 4);
  cudaMemset(v32.get(), 0, n * 4);
  cudaMemset(m16.get(), 0, n * 2);
  cudaMemset(v16.get(), 0, n * 2);
  const cuda::DecayRanges ranges{dbounds.get(), dflags.get(), 2};
  const double gnorm = std::sqrt(cpu::sum_squares(g.data(), n));
  const float max_norm = static_cast<float>(gnorm / 2);  // clipping active
  std::vector<float> rp = p, rm(n, 0.0f), rv(n, 0.0f);
  // Without master weights each step rounds stochastically: check one step
  // exactly (each weight lands on a bf16 neighbour of the fp32 result).
  const int64_t steps = master ? 3 : 1;
  const float lr = master ? 1e-3f : 1e-2f;
  for (int64_t step = 1; step <= steps; ++step) {
    const cuda::AdamWArgs a{lr, 0.9f, 0.95f, 1e-8f, 0.1f, step, max_norm, 42};
    cuda::adamw_step(dp.get(), master ? dmaster.get() : nullptr, dg.get(), false,
                     state_bf16 ? (void*)m16.get() : m32.get(),
                     state_bf16 ? (void*)v16.get() : v32.get(), state_bf16, n, ranges, a, norm.get(), scratch.get(),
                     nullptr);
    const float clip = static_cast<float>(max_norm / (gnorm + 1e-6));
    cpu::adamw_update(rp.data(), g.data(), rm.data(), rv.data(), 1000, {lr, 0.9f, 0.95f, 1e-8f, 0.0f, step, clip});
    cpu::adamw_update(rp.data() + 1000, g.data() + 1000, rm.data() + 1000, rv.data() + 1000, n - 1000,
                      {lr, 0.9f, 0.95f, 1e-8f, 0.1f, step, clip});
  }
  EXPECT_NEAR(norm.download()[0], gnorm, 1e-4 * gnorm);
  // Compare the parameter change, which is what the optimizer computes.
  const auto got = master ? dmaster.download() : to_f32(dp.download());
  std::vector<float> dgot(n), dref(n);
  for (int64_t i = 0; i < n; ++i) {
    dgot[i] = got[i] - p[i];
    dref[i] = rp[i] - p[i];
  }
  if (master && !state_bf16) {
    EXPECT_LT(rel_error(dgot, dref), 1e-3);
  } else if (master) {  // bf16 m and v: the same update up to their rounding
    double err = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      err += std::fabs(dgot[i] - dref[i]);
      mag += std::fabs(dref[i]);
    }
    EXPECT_LT(err / mag, 2e-2);
  } else {  // stochastic rounding: a bf16 neighbour of the exact value, unbiased on average
    double bias = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double ulp = std::ldexp(1.0, std::ilogb(rp[i]) - 7);
      ASSERT_LE(std::fabs(got[i] - rp[i]), ulp * 1.0001) << "element " << i;
      bias += got[i] - rp[i];
      mag += std::fabs(dref[i]);
    }
    EXPECT_LT(std::fabs(bias) / mag, 2e-2) << "rounding must be unbiased";
  }
}

INSTANTIATE_TEST_SUITE_P(Precision, CudaAdamW,
                         ::testing::Values(std::pair{true, false}, std::pair{true, true},
                                           std::pair{false, false}));

// A step applied range by range (the deferred update, one range per unit)
// equals the same step applied over the whole buffer in one range, bit for
// bit, whatever the ranges' alignment; and it matches the one-launch
// adamw_step up to the norm's summation order.
TEST(CudaKernels, AdamWUpdateByRangesEqualsOneRange) {
  REQUIRE_GPU();
  const int64_t n = 70001;
  const auto p = randn_bf16(n, 41), g = randn(n, 42, 3.0f);
  std::vector<int64_t> bounds = {0, 1001, n};
  std::vector<uint8_t> flags = {0, 1};
  DeviceBuffer<int64_t> dbounds(3);
  DeviceBuffer<uint8_t> dflags(2);
  dbounds.upload(bounds);
  dflags.upload(flags);
  const cuda::DecayRanges ranges{dbounds.get(), dflags.get(), 2};
  const float max_norm = static_cast<float>(std::sqrt(cpu::sum_squares(g.data(), n)) / 2);
  std::vector<std::vector<float>> results;
  for (int how = 0; how < 3; ++how) {  // one range; five odd ranges; adamw_step
    DeviceBuffer<bf16> dp(n), m(n), v(n);
    DeviceBuffer<float> dg(n), ss(1), norm(1), scratch(cuda::adamw_scratch_floats());
    dp.upload(to_bf16(p));
    dg.upload(g);
    cudaMemset(m.get(), 0, n * 2);
    cudaMemset(v.get(), 0, n * 2);
    for (int64_t step = 1; step <= 2; ++step) {
      const cuda::AdamWArgs a{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step, max_norm, 5};
      if (how == 2) {
        cuda::adamw_step(dp.get(), nullptr, dg.get(), false, m.get(), v.get(), true, n, ranges, a, norm.get(),
                         scratch.get(), nullptr);
        continue;
      }
      cuda::grad_sum_squares(dg.get(), false, n, ss.get(), scratch.get(), nullptr);
      const std::vector<int64_t> cuts = how == 0 ? std::vector<int64_t>{0, n}
                                                 : std::vector<int64_t>{0, 1, 999, 1003, 40001, n};
      for (size_t c = 0; c + 1 < cuts.size(); ++c)
        cuda::adamw_update_range(dp.get(), nullptr, dg.get(), false, m.get(), v.get(), true, cuts[c], cuts[c + 1],
                                 ranges, a, ss.get(), nullptr);
    }
    results.push_back(to_f32(dp.download()));
  }
  EXPECT_EQ(rel_error(results[1], results[0]), 0.0);
  std::vector<float> d0(n), d2(n);
  for (int64_t i = 0; i < n; ++i) {
    d0[i] = results[0][i] - p[i];
    d2[i] = results[2][i] - p[i];
  }
  EXPECT_LT(rel_error(d0, d2), 2e-2);  // stochastic rounding of the same update
}

// bf16 gradients (precision.grad_dtype bf16) are widened to fp32 as they are
// read: the same values as fp32 gradients give the same update, bit for bit,
// and the same norm.
TEST(CudaKernels, AdamWReadsBf16GradientsAsTheirFp32Values) {
  REQUIRE_GPU();
  const int64_t n = 50001;
  const auto p = randn_bf16(n, 31), g = randn_bf16(n, 32, 2.0f);
  std::vector<int64_t> bounds = {0, 77, n};
  std::vector<uint8_t> flags = {0, 1};
  DeviceBuffer<int64_t> dbounds(3);
  DeviceBuffer<uint8_t> dflags(2);
  dbounds.upload(bounds);
  dflags.upload(flags);
  const cuda::DecayRanges ranges{dbounds.get(), dflags.get(), 2};
  std::vector<std::vector<float>> params, norms;
  for (const bool gb : {false, true}) {
    DeviceBuffer<bf16> dp(n), m(n), v(n), g16(n);
    DeviceBuffer<float> g32(n), norm(1), scratch(cuda::adamw_scratch_floats());
    dp.upload(to_bf16(p));
    g16.upload(to_bf16(g));
    g32.upload(g);
    cudaMemset(m.get(), 0, n * 2);
    cudaMemset(v.get(), 0, n * 2);
    for (int64_t step = 1; step <= 2; ++step)
      cuda::adamw_step(dp.get(), nullptr, gb ? (const void*)g16.get() : (const void*)g32.get(), gb, m.get(), v.get(),
                       true, n, ranges, {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 10.0f, 7}, norm.get(),
                       scratch.get(), nullptr);
    params.push_back(to_f32(dp.download()));
    norms.push_back(norm.download());
  }
  EXPECT_EQ(rel_error(params[1], params[0]), 0.0);
  EXPECT_EQ(norms[1][0], norms[0][0]);
}

struct AttnCase {
  int64_t B, T, H, KV, hd;
};

void check_attention(const AttnCase& c, bool use_cudnn) {
  const cpu::AttentionShape s{c.B, c.T, c.H, c.KV, c.hd};
  const int64_t N = c.B * c.T;
  auto qkv = randn_bf16(N * s.qkv_stride(), 17), dout = randn_bf16(N * s.out_stride(), 18);
  std::vector<float> out(N * s.out_stride()), lse(c.B * c.H * c.T), dqkv(qkv.size());
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), s);
  cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s);
  DeviceBuffer<bf16> d_qkv(qkv.size()), d_out(out.size()), d_dout(dout.size()), d_dqkv(qkv.size());
  DeviceBuffer<float> d_lse(lse.size()), scratch(lse.size());
  d_qkv.upload(to_bf16(qkv));
  d_dout.upload(to_bf16(dout));
  if (use_cudnn) {
    cuda::CudnnAttention attn(s, nullptr);
    DeviceBuffer<uint8_t> ws(std::max<size_t>(attn.workspace_bytes(), 1));
    attn.forward(d_out.get(), d_lse.get(), d_qkv.get(), ws.get());
    attn.backward(d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out.get(), d_lse.get(), ws.get());
  } else {
    cuda::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s, nullptr);
    cuda::attention_backward(d_dqkv.get(), scratch.get(), d_dout.get(), d_qkv.get(), d_out.get(), d_lse.get(), s,
                             nullptr);
  }
  EXPECT_LT(rel_error(to_f32(d_out.download()), out), kBf16Tol);
  EXPECT_LT(rel_error(d_lse.download(), lse), 1e-3);
  EXPECT_LT(rel_error(to_f32(d_dqkv.download()), dqkv), 3e-2);
}

TEST(CudaKernels, AttentionFallback) {
  REQUIRE_GPU();
  for (const AttnCase& c : {AttnCase{1, 1, 1, 1, 2}, AttnCase{2, 37, 4, 2, 16}, AttnCase{1, 70, 6, 3, 40},
                            AttnCase{1, 129, 8, 2, 128}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << c.B << " T=" << c.T << " H=" << c.H << " KV=" << c.KV
                                      << " hd=" << c.hd);
    check_attention(c, false);
  }
}

TEST(CudaKernels, AttentionCudnn) {
  REQUIRE_GPU();
  if (!cuda::CudnnAttention::available()) GTEST_SKIP() << "cuDNN not available at run time";
  for (const AttnCase& c : {AttnCase{1, 64, 4, 2, 64}, AttnCase{2, 129, 8, 2, 128}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << c.B << " T=" << c.T << " H=" << c.H << " KV=" << c.KV
                                      << " hd=" << c.hd);
    check_attention(c, true);
  }
}

// The casts against their CPU twin, byte for byte: absmax, the scale, plain
// and transposed, both formats, at sizes with and without the vector paths,
// a zero tensor, a tensor of tiny values, and one with a NaN.
TEST(CudaKernels, Fp8CastsMatchTheCpu) {
  REQUIRE_GPU();
  auto same_bytes = [](const std::vector<uint8_t>& got, const std::vector<uint8_t>& want, Fp8Format f) {
    size_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const bool both_nan = std::isnan(cpu::fp8_decode(got[i], f)) && std::isnan(cpu::fp8_decode(want[i], f));
      if (got[i] != want[i] && !both_nan && bad++ < 5)
        ADD_FAILURE() << "byte " << i << ": GPU " << int(got[i]) << ", CPU " << int(want[i]);
    }
    return bad == 0;
  };
  struct Case {
    int64_t rows, cols;
    float scale;
  };
  for (const Case c : std::vector<Case>{{1, 1, 1.0f}, {1, 7, 3.0f}, {1, 8, 1.0f}, {3, 333, 0.01f}, {64, 64, 1.0f},
                                        {128, 192, 40.0f}, {37, 40, 1e-30f}, {100, 24, 1.0f}, {512, 1040, 0.02f},
                                        {7, 9, 0.0f}}) {
    const int64_t n = c.rows * c.cols;
    SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.cols << " scale " << c.scale);
    auto x = randn_bf16(n, 23, c.scale);
    DeviceBuffer<bf16> dx(n);
    dx.upload(to_bf16(x));
    DeviceBuffer<float> slots(3);
    DeviceBuffer<uint8_t> out(n), outt(n);
    cuda::absmax(slots.get(), dx.get(), n, nullptr);
    const float amax = cpu::absmax(x.data(), n);
    EXPECT_EQ(slots.download()[0], amax);
    for (Fp8Format f : {Fp8Format::e4m3, Fp8Format::e5m2}) {
      cuda::fp8_cast(out.get(), slots.get() + 1, dx.get(), n, slots.get(), f, nullptr);
      cuda::fp8_cast_transposed(outt.get(), slots.get() + 2, dx.get(), c.rows, c.cols, slots.get(), f, nullptr);
      const float s = cpu::fp8_scale(amax, f);
      std::vector<uint8_t> want(n), want_t(n);
      cpu::fp8_cast(want.data(), x.data(), n, s, f);
      for (int64_t r = 0; r < c.rows; ++r)
        for (int64_t k = 0; k < c.cols; ++k) want_t[k * c.rows + r] = want[r * c.cols + k];
      EXPECT_TRUE(same_bytes(out.download(), want, f));
      EXPECT_TRUE(same_bytes(outt.download(), want_t, f));
      const auto sl = slots.download();
      EXPECT_EQ(sl[1], 1.0f / s);
      EXPECT_EQ(sl[2], 1.0f / s);
    }
  }
  // A NaN anywhere makes the amax NaN, and the cast NaN (caught downstream as a NaN loss).
  std::vector<float> x = randn_bf16(1000, 24);
  x[517] = NAN;
  DeviceBuffer<bf16> dx(1000);
  dx.upload(to_bf16(x));
  DeviceBuffer<float> slots(2);
  DeviceBuffer<uint8_t> out(1000);
  cuda::absmax(slots.get(), dx.get(), 1000, nullptr);
  cuda::fp8_cast(out.get(), slots.get() + 1, dx.get(), 1000, slots.get(), Fp8Format::e4m3, nullptr);
  EXPECT_TRUE(std::isnan(slots.download()[0]));
  EXPECT_TRUE(std::isnan(cpu::fp8_decode(out.download()[3], Fp8Format::e4m3)));
}

// FP8 products against fp32 products of the same FP8 values (the casts'
// bytes decoded and scaled back): what is left is fp32 accumulation order,
// cuBLAS's fast accumulation in the forward product, and bf16 output.
TEST(CudaKernels, Fp8MatmulMatchesTheCpuOnTheCastOperands) {
  REQUIRE_GPU();
  DeviceBuffer<uint8_t> ws(cuda::Blas::kWorkspaceBytes);
  cuda::Blas blas(nullptr, ws.get(), cuda::Blas::kWorkspaceBytes);
  auto decoded = [](const std::vector<uint8_t>& b, float scale_inv, Fp8Format f) {
    std::vector<float> v(b.size());
    for (size_t i = 0; i < b.size(); ++i) v[i] = cpu::fp8_decode(b[i], f) * scale_inv;
    return v;
  };
  for (auto [M, N, K] : std::vector<std::array<int64_t, 3>>{{16, 16, 16}, {64, 48, 32}, {256, 768, 512}, {128, 2048, 1024}}) {
    SCOPED_TRACE(::testing::Message() << "M=" << M << " N=" << N << " K=" << K);
    auto x = randn_bf16(M * K, 25), w = randn_bf16(N * K, 26, 0.05f), g = randn_bf16(M * N, 27, 1e-3f);
    DeviceBuffer<bf16> dx(M * K), dw(N * K), dg(M * N), dy(M * N), ddx(M * K);
    dx.upload(to_bf16(x));
    dw.upload(to_bf16(w));
    dg.upload(to_bf16(g));
    constexpr int kS = kFp8ScaleSlotBytes / sizeof(float);  // as the model keeps its scales
    DeviceBuffer<float> s(kS * 9);
    auto at = [&](int k) { return s.get() + kS * k; };
    DeviceBuffer<uint8_t> x8(M * K), w8(N * K), wt8(N * K), g8(M * N);
    cuda::absmax(at(0), dx.get(), M * K, nullptr);
    cuda::fp8_cast(x8.get(), at(1), dx.get(), M * K, at(0), Fp8Format::e4m3, nullptr);
    cuda::absmax(at(2), dw.get(), N * K, nullptr);
    cuda::fp8_cast(w8.get(), at(3), dw.get(), N * K, at(2), Fp8Format::e4m3, nullptr);
    cuda::fp8_cast_transposed(wt8.get(), at(4), dw.get(), N, K, at(2), Fp8Format::e4m3, nullptr);
    cuda::absmax(at(5), dg.get(), M * N, nullptr);
    cuda::fp8_cast(g8.get(), at(6), dg.get(), M * N, at(5), Fp8Format::e5m2, nullptr);
    blas.forward_fp8(dy.get(), x8.get(), at(1), w8.get(), at(3), M, N, K);
    blas.input_grad_fp8(ddx.get(), g8.get(), at(6), wt8.get(), at(4), M, N, K);
    const auto sl = s.download();
    const auto xq = decoded(x8.download(), sl[kS * 1], Fp8Format::e4m3), wq = decoded(w8.download(), sl[kS * 3], Fp8Format::e4m3),
               gq = decoded(g8.download(), sl[kS * 6], Fp8Format::e5m2);
    std::vector<float> y(M * N), rdx(M * K);
    cpu::matmul_forward(y.data(), xq.data(), wq.data(), M, N, K);
    cpu::matmul_backward(rdx.data(), nullptr, gq.data(), xq.data(), wq.data(), M, N, K);
    EXPECT_LT(rel_error(to_f32(dy.download()), y), kBf16Tol);
    EXPECT_LT(rel_error(to_f32(ddx.download()), rdx), kBf16Tol);
    // The weight gradient from both operands cast transposed (tokens
    // contiguous): written in bf16, and added onto an fp32 gradient.
    DeviceBuffer<uint8_t> xt8(M * K), gt8(M * N);
    cuda::fp8_cast_transposed(xt8.get(), at(7), dx.get(), M, K, at(0), Fp8Format::e4m3, nullptr);
    cuda::fp8_cast_transposed(gt8.get(), at(8), dg.get(), M, N, at(5), Fp8Format::e5m2, nullptr);
    DeviceBuffer<bf16> ddw16(N * K);
    DeviceBuffer<float> ddw32(N * K);
    std::vector<float> prior(N * K);
    for (int64_t i = 0; i < N * K; ++i) prior[i] = 1e-3f * static_cast<float>((i % 7) - 3);
    ddw32.upload(prior);
    blas.weight_grad_fp8({ddw16.get(), true, false}, gt8.get(), at(8), xt8.get(), at(7), M, N, K);
    blas.weight_grad_fp8({ddw32.get(), false, true}, gt8.get(), at(8), xt8.get(), at(7), M, N, K);
    {
      const auto sl2 = s.download();
      std::vector<uint8_t> xt = xt8.download(), gt = gt8.download();
      std::vector<float> xq2(M * K), gq2(M * N);  // back to row-major [M, K] and [M, N]
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t k = 0; k < K; ++k) xq2[m * K + k] = cpu::fp8_decode(xt[k * M + m], Fp8Format::e4m3) * sl2[kS * 7];
        for (int64_t n = 0; n < N; ++n) gq2[m * N + n] = cpu::fp8_decode(gt[n * M + m], Fp8Format::e5m2) * sl2[kS * 8];
      }
      EXPECT_EQ(xq2, xq);  // the transposed casts are the same values
      EXPECT_EQ(gq2, gq);
      std::vector<float> rdw(N * K, 0.0f);
      cpu::matmul_backward(nullptr, rdw.data(), gq.data(), xq.data(), wq.data(), M, N, K);
      EXPECT_LT(rel_error(to_f32(ddw16.download()), rdw), kBf16Tol);
      std::vector<float> want = rdw;
      for (int64_t i = 0; i < N * K; ++i) want[i] += prior[i];
      // Hopper's FP8 tensor cores accumulate in less than fp32 (DeepSeek-V3
      // measured about 14 bits; cuBLAS promotes partial sums now and then):
      // 3e-5 to 4e-4 against the CPU's fp32 here (H200, 2026-12-05). A wrong
      // layout or scale would be off by order one.
      EXPECT_LT(rel_error(ddw32.download(), want), 2e-3);
    }
    // And the quantization itself is what FP8 promises against the bf16 product.
    std::vector<float> y16(M * N);
    cpu::matmul_forward(y16.data(), x.data(), w.data(), M, N, K);
    EXPECT_LT(rel_error(to_f32(dy.download()), y16), 0.1);
  }
  // Shapes FP8 cannot take are refused with the reason.
  DeviceBuffer<bf16> out(24 * 16);
  DeviceBuffer<uint8_t> a(24 * 16), b(16 * 16);
  DeviceBuffer<float> s(1);
  const std::string why =
      test::error_of([&] { blas.forward_fp8(out.get(), a.get(), s.get(), b.get(), s.get(), 16, 24, 12); });
  EXPECT_NE(why.find("multiple of 16"), std::string::npos) << why;
}

TEST(CudaKernels, Matmul) {
  REQUIRE_GPU();
  DeviceBuffer<uint8_t> ws(cuda::Blas::kWorkspaceBytes);
  cuda::Blas blas(nullptr, ws.get(), cuda::Blas::kWorkspaceBytes);
  for (auto [M, N, K] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {17, 33, 9}, {256, 768, 512}}) {
    SCOPED_TRACE(::testing::Message() << "M=" << M << " N=" << N << " K=" << K);
    auto x = randn_bf16(M * K, 19), w = randn_bf16(N * K, 20), g = randn_bf16(M * N, 21);
    DeviceBuffer<bf16> dx(M * K), dw(N * K), dy(M * N), dg(M * N), ddx(M * K);
    DeviceBuffer<float> ddw(N * K);
    dx.upload(to_bf16(x));
    dw.upload(to_bf16(w));
    dg.upload(to_bf16(g));
    std::vector<float> dw0(N * K, 0.25f);
    ddw.upload(dw0);
    blas.forward(dy.get(), dx.get(), dw.get(), M, N, K);
    blas.backward(ddx.get(), {ddw.get(), false, true}, dg.get(), dx.get(), dw.get(), M, N, K);
    std::vector<float> y(M * N), rdx(M * K), rdw = dw0;
    cpu::matmul_forward(y.data(), x.data(), w.data(), M, N, K);
    cpu::matmul_backward(rdx.data(), rdw.data(), g.data(), x.data(), w.data(), M, N, K);
    EXPECT_LT(rel_error(to_f32(dy.download()), y), kBf16Tol);
    EXPECT_LT(rel_error(to_f32(ddx.download()), rdx), kBf16Tol);
    EXPECT_LT(rel_error(ddw.download(), rdw), 1e-4);
    // bf16 weight gradient: overwritten (poisoned first), then accumulated into
    DeviceBuffer<bf16> ddw16(N * K);
    ddw16.upload(std::vector<bf16>(N * K, __float2bfloat16(NAN)));
    blas.backward(nullptr, {ddw16.get(), true, false}, dg.get(), dx.get(), dw.get(), M, N, K);
    std::vector<float> rdw1(N * K, 0.0f);
    cpu::matmul_backward(nullptr, rdw1.data(), g.data(), x.data(), w.data(), M, N, K);
    EXPECT_LT(rel_error(to_f32(ddw16.download()), rdw1), kBf16Tol);
    blas.backward(nullptr, {ddw16.get(), true, true}, dg.get(), dx.get(), dw.get(), M, N, K);
    for (float& v : rdw1) v *= 2;
    EXPECT_LT(rel_error(to_f32(ddw16.download()), rdw1), kBf16Tol);
    // The same products through the algorithms tuning chose (when it chose
    // any over cuBLAS's default): the same results.
    setenv("INTELLECT_GEMM_TUNE", "1", 1);
    const std::string tuned = blas.tune({{M, N, K, false, true}, {M, N, K, true, false}});
    unsetenv("INTELLECT_GEMM_TUNE");
    SCOPED_TRACE(tuned);
    DeviceBuffer<bf16> dy2(M * N), ddx2(M * K);
    DeviceBuffer<float> ddw2(N * K);
    ddw2.upload(dw0);
    blas.forward(dy2.get(), dx.get(), dw.get(), M, N, K);
    blas.backward(ddx2.get(), {ddw2.get(), false, true}, dg.get(), dx.get(), dw.get(), M, N, K);
    EXPECT_LT(rel_error(to_f32(dy2.download()), y), kBf16Tol);
    EXPECT_LT(rel_error(to_f32(ddx2.download()), rdx), kBf16Tol);
    EXPECT_LT(rel_error(ddw2.download(), rdw), 1e-4);
    ddw16.upload(std::vector<bf16>(N * K, __float2bfloat16(NAN)));
    blas.backward(nullptr, {ddw16.get(), true, false}, dg.get(), dx.get(), dw.get(), M, N, K);
    for (float& v : rdw1) v *= 0.5f;
    EXPECT_LT(rel_error(to_f32(ddw16.download()), rdw1), kBf16Tol);
  }
}

}  // namespace
}  // namespace intellect

namespace intellect {
namespace {

using namespace test;

// FSDP's gradient helpers against the CPU twin, odd sizes included; the
// bf16 reduction path rounds once, so its sum is within bf16 of the fp32 one.
TEST(CudaKernels, GradShardAddIntoAndBf16Conversions) {
  REQUIRE_GPU();
  for (int64_t n : {int64_t(1), int64_t(333), int64_t(100003)}) {
    SCOPED_TRACE(n);
    const std::vector<float> dst0 = randn(n, 1), src = randn(n, 2);
    std::vector<float> ref = dst0;
    cpu::add_into(ref.data(), src.data(), n);
    DeviceBuffer<float> d_dst(n), d_src(n);
    d_dst.upload(dst0);
    d_src.upload(src);
    cuda::add_into(d_dst.get(), d_src.get(), n, nullptr);
    EXPECT_EQ(rel_error(d_dst.download(), ref), 0.0);

    DeviceBuffer<bf16> d_half(n);  // poisoned: every element must be written
    cuda::to_bf16(d_half.get(), d_src.get(), n, nullptr);
    const std::vector<bf16> half = d_half.download();
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(__bfloat162float(half[i]), __bfloat162float(__float2bfloat16(src[i]))) << i;
    d_dst.upload(dst0);
    cuda::add_into(d_dst.get(), d_half.get(), n, nullptr);
    EXPECT_LT(rel_error(d_dst.download(), ref), 1e-2);
    // And back: bf16 to fp32 is exact.
    DeviceBuffer<float> d_back(n);
    cuda::to_f32(d_back.get(), d_half.get(), n, nullptr);
    const std::vector<float> back = d_back.download();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[i], __bfloat162float(half[i])) << i;
  }
}

}  // namespace
}  // namespace intellect
