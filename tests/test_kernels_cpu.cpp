// CPU reference kernels: forward against direct formulas, backward against
// central differences, at several shapes including odd ones.
#include <cmath>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/fp8.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "test_util.h"
#include "util/error.h"

namespace intellect {
namespace {

using test::dot;
using test::expect_gradient;
using test::randn;
using test::rel_error;

struct MatShape {
  int64_t M, N, K;
};
class MatmulCpu : public ::testing::TestWithParam<MatShape> {};

TEST_P(MatmulCpu, ForwardMatchesNaive) {
  const auto [M, N, K] = GetParam();
  auto x = randn(M * K, 1), w = randn(N * K, 2);
  std::vector<float> y(M * N, NAN), ref(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(x[m * K + k]) * w[n * K + k];
      ref[m * N + n] = float(s);
    }
  cpu::matmul_forward(y.data(), x.data(), w.data(), M, N, K);
  EXPECT_LT(rel_error(y, ref), 1e-5);
}

TEST_P(MatmulCpu, BackwardMatchesFiniteDifferences) {
  const auto [M, N, K] = GetParam();
  auto x = randn(M * K, 3), w = randn(N * K, 4), r = randn(M * N, 5);
  std::vector<float> dx(M * K, NAN), dw(N * K, 0.0f), y(M * N);
  cpu::matmul_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), M, N, K);
  auto loss = [&] {
    cpu::matmul_forward(y.data(), x.data(), w.data(), M, N, K);
    return dot(y, r);
  };
  expect_gradient("dx", x, dx, loss);
  expect_gradient("dw", w, dw, loss);
  // dw accumulates: a second call doubles it.
  std::vector<float> dw2 = dw;
  cpu::matmul_backward(nullptr, dw2.data(), r.data(), x.data(), w.data(), M, N, K);
  for (size_t i = 0; i < dw.size(); ++i) ASSERT_NEAR(dw2[i], 2 * dw[i], 1e-4 * (1 + std::fabs(dw[i])));
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulCpu,
                         ::testing::Values(MatShape{1, 1, 1}, MatShape{3, 5, 7}, MatShape{17, 33, 9},
                                           MatShape{64, 600, 48}, MatShape{5, 1031, 13}));

TEST(MatmulCpu, GemmAccumulates) {
  auto a = randn(6 * 4, 7), b = randn(4 * 5, 8);
  std::vector<float> c(6 * 5, 1.0f), c0(6 * 5);
  cpu::gemm_nn(c0.data(), a.data(), b.data(), 6, 5, 4, false);
  cpu::gemm_nn(c.data(), a.data(), b.data(), 6, 5, 4, true);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_NEAR(c[i], c0[i] + 1.0f, 1e-5f);
}

struct NormShape {
  int64_t N, D;
};
class RmsnormCpu : public ::testing::TestWithParam<NormShape> {};

TEST_P(RmsnormCpu, ForwardAndBackward) {
  const auto [N, D] = GetParam();
  const float eps = 1e-5f;
  auto x = randn(N * D, 11), w = randn(D, 12, 0.5f), r = randn(N * D, 13);
  for (auto& v : w) v += 1.0f;
  std::vector<float> y(N * D, NAN), rstd(N), dx(N * D, NAN), dw(D, 0.0f);
  cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, eps);
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += double(x[n * D + d]) * x[n * D + d];
    const double rs = 1.0 / std::sqrt(ss / D + eps);
    for (int64_t d = 0; d < D; ++d)
      ASSERT_NEAR(y[n * D + d], x[n * D + d] * rs * w[d], 1e-5 * (1 + std::fabs(y[n * D + d])));
  }
  cpu::rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, D, false);
  auto loss = [&] {
    cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, eps);
    return dot(y, r);
  };
  expect_gradient("dx", x, dx, loss, 24, 1e-2f);
  expect_gradient("dw", w, dw, loss, 24, 1e-2f);
  // accumulate=true adds into dx
  std::vector<float> acc(N * D, 1.0f);
  cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, eps);
  cpu::rmsnorm_backward(acc.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, D, true);
  for (size_t i = 0; i < acc.size(); ++i) ASSERT_NEAR(acc[i], dx[i] + 1.0f, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsnormCpu,
                         ::testing::Values(NormShape{1, 1}, NormShape{3, 7}, NormShape{8, 64},
                                           NormShape{5, 129}));

TEST(EmbeddingCpu, ForwardGathersAndBackwardScatters) {
  const int64_t V = 11, D = 7, N = 9;
  auto table = randn(V * D, 21);
  std::vector<int32_t> tok = {3, 0, 10, 3, 3, 5, 0, 9, 1};
  std::vector<float> out(N * D, NAN);
  cpu::embedding_forward(out.data(), tok.data(), table.data(), N, V, D);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) ASSERT_EQ(out[n * D + d], table[tok[n] * D + d]);
  auto g = randn(N * D, 22);
  std::vector<float> dt(V * D, 0.0f), ref(V * D, 0.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) ref[tok[n] * D + d] += g[n * D + d];
  cpu::embedding_backward(dt.data(), g.data(), tok.data(), N, D);
  EXPECT_LT(rel_error(dt, ref), 1e-6);
}

TEST(EmbeddingCpu, RefusesOutOfRangeTokens) {
  std::vector<float> table(4 * 2), out(2 * 2);
  std::vector<int32_t> tok = {1, 4};
  try {
    cpu::embedding_forward(out.data(), tok.data(), table.data(), 2, 4, 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 4 at position 1"), std::string::npos) << e.what();
  }
}

TEST(SwigluCpu, ForwardAndBackward) {
  for (auto [N, F] : {std::pair<int64_t, int64_t>{1, 1}, {5, 13}, {16, 64}}) {
    auto gu = randn(N * 2 * F, 31, 2.0f), r = randn(N * F, 32);
    std::vector<float> y(N * F, NAN), dgu(N * 2 * F, NAN);
    cpu::swiglu_forward(y.data(), gu.data(), N, F);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < F; ++i) {
        const double g = gu[n * 2 * F + i], u = gu[n * 2 * F + F + i];
        ASSERT_NEAR(y[n * F + i], g / (1 + std::exp(-g)) * u, 1e-5);
      }
    cpu::swiglu_backward(dgu.data(), r.data(), gu.data(), N, F);
    expect_gradient("dgate_up", gu, dgu, [&] {
      cpu::swiglu_forward(y.data(), gu.data(), N, F);
      return dot(y, r);
    }, 32, 1e-2f);
  }
}

ModelConfig rope_config(int64_t head_dim, bool llama3) {
  ModelConfig c;
  c.head_dim = head_dim;
  c.rope_theta = 500000.0;
  if (llama3) {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = 8.0;
    c.rope_scaling.low_freq_factor = 1.0;
    c.rope_scaling.high_freq_factor = 4.0;
    c.rope_scaling.original_max_position = 64;  // small, so all three bands occur
  }
  return c;
}

TEST(RopeCpu, InverseFrequenciesAndLlama3Scaling) {
  const ModelConfig plain = rope_config(16, false), scaled = rope_config(16, true);
  auto a = rope_inv_freq(plain), b = rope_inv_freq(scaled);
  ASSERT_EQ(a.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(a[i], std::pow(500000.0, -2.0 * i / 16), 1e-7 * (1 + a[i]));
  // wavelengths below 64/4 = 16 are unchanged, above 64 divided by 8, smooth in between.
  for (int i = 0; i < 8; ++i) {
    const double wl = 2 * M_PI / a[i];
    if (wl < 16) {
      EXPECT_FLOAT_EQ(b[i], a[i]);
    } else if (wl > 64) {
      EXPECT_NEAR(b[i], a[i] / 8, 1e-9);
    } else {
      const double s = (64 / wl - 1) / 3;
      EXPECT_NEAR(b[i], (1 - s) * a[i] / 8 + s * a[i], 1e-7);
    }
  }
}

TEST(RopeCpu, RotatesHalvesAndInverts) {
  const int64_t B = 2, T = 5, H = 3, hd = 8, stride = H * hd + 3;  // padded rows
  const ModelConfig c = rope_config(hd, false);
  const RopeTable tab = rope_table(c, T);
  auto x = randn(B * T * stride, 41), orig = x;
  cpu::rope_apply(x.data(), B, T, H, stride, tab, false);
  const auto inv = rope_inv_freq(c);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          const float* o = orig.data() + (b * T + t) * stride + h * hd;
          const float* y = x.data() + (b * T + t) * stride + h * hd;
          const double ang = double(float(t) * inv[i]);
          ASSERT_NEAR(y[i], o[i] * std::cos(ang) - o[i + hd / 2] * std::sin(ang), 1e-5);
          ASSERT_NEAR(y[i + hd / 2], o[i + hd / 2] * std::cos(ang) + o[i] * std::sin(ang), 1e-5);
        }
  for (int64_t r = 0; r < B * T; ++r)  // padding untouched
    for (int64_t j = H * hd; j < stride; ++j) ASSERT_EQ(x[r * stride + j], orig[r * stride + j]);
  cpu::rope_apply(x.data(), B, T, H, stride, tab, true);  // the backward is the inverse rotation
  EXPECT_LT(rel_error(x, orig), 1e-6);
}

struct AttnShape {
  int64_t B, T, H, KV, hd;
};
class AttentionCpu : public ::testing::TestWithParam<AttnShape> {};

TEST_P(AttentionCpu, ForwardMatchesNaiveSoftmax) {
  const auto [B, T, H, KV, hd] = GetParam();
  const cpu::AttentionShape s{B, T, H, KV, hd};
  auto qkv = randn(B * T * s.qkv_stride(), 51);
  std::vector<float> out(B * T * s.out_stride(), NAN), lse(B * H * T, NAN);
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), s);
  const int64_t group = H / KV;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> sc(t + 1);
        double mx = -1e300;
        for (int64_t u = 0; u <= t; ++u) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i)
            d += double(qkv[(b * T + t) * s.qkv_stride() + h * hd + i]) *
                 qkv[(b * T + u) * s.qkv_stride() + H * hd + (h / group) * hd + i];
          sc[u] = d / std::sqrt(double(hd));
          mx = std::max(mx, sc[u]);
        }
        double z = 0;
        for (auto& v : sc) z += (v = std::exp(v - mx));
        EXPECT_NEAR(lse[(b * H + h) * T + t], mx + std::log(z), 1e-5);
        for (int64_t i = 0; i < hd; ++i) {
          double o = 0;
          for (int64_t u = 0; u <= t; ++u)
            o += sc[u] / z * qkv[(b * T + u) * s.qkv_stride() + (H + KV) * hd + (h / group) * hd + i];
          ASSERT_NEAR(out[(b * T + t) * s.out_stride() + h * hd + i], o, 1e-5);
        }
      }
}

TEST_P(AttentionCpu, BackwardMatchesFiniteDifferences) {
  const auto [B, T, H, KV, hd] = GetParam();
  const cpu::AttentionShape s{B, T, H, KV, hd};
  auto qkv = randn(B * T * s.qkv_stride(), 52), r = randn(B * T * s.out_stride(), 53);
  std::vector<float> out(B * T * s.out_stride()), lse(B * H * T), dqkv(qkv.size(), NAN);
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), s);
  cpu::attention_backward(dqkv.data(), r.data(), qkv.data(), out.data(), lse.data(), s);
  expect_gradient("dqkv", qkv, dqkv, [&] {
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), s);
    return dot(out, r);
  }, 48, 1e-2f);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCpu,
                         ::testing::Values(AttnShape{1, 1, 1, 1, 2}, AttnShape{2, 7, 4, 2, 8},
                                           AttnShape{1, 13, 6, 3, 6}, AttnShape{2, 9, 4, 1, 16},
                                           AttnShape{1, 33, 2, 2, 4}));

// Packed documents: masked attention over the packed rows must be exactly
// plain causal attention run on each document alone (forward and backward:
// the same sums in the same order), for documents of one token, whole rows,
// many short ones and random lengths.
struct PackedCase {
  const char* name;
  int64_t B, T, H, KV, hd;
  std::vector<int64_t> lengths;
};

void PrintTo(const PackedCase& c, std::ostream* os) { *os << c.name; }

std::vector<PackedCase> packed_cases() {
  return {
      {"one_token_documents", 2, 9, 4, 2, 8, std::vector<int64_t>(18, 1)},
      {"whole_rows", 2, 11, 4, 2, 8, {11, 11}},
      {"a_document_across_rows", 3, 7, 2, 1, 4, {3, 12, 6}},
      {"many_short", 2, 24, 4, 1, 8, {1, 2, 3, 1, 1, 4, 2, 2, 5, 1, 3, 3, 2, 1, 2}},
      {"random_lengths", 3, 40, 6, 3, 8, test::random_lengths(120, 17, 9)},
  };
}

class MaskedAttentionCpu : public ::testing::TestWithParam<PackedCase> {};

TEST_P(MaskedAttentionCpu, EqualsEachDocumentAlone) {
  const PackedCase& c = GetParam();
  const cpu::AttentionShape s{c.B, c.T, c.H, c.KV, c.hd};
  const std::vector<int32_t> cu = test::pack_documents(c.B, c.T, c.lengths);
  const int64_t n = static_cast<int64_t>(cu.size()) - 1, N = c.B * c.T;
  const int64_t QS = s.qkv_stride(), OS = s.out_stride();
  auto qkv = randn(N * QS, 61), dout = randn(N * OS, 62);
  std::vector<float> out(N * OS, NAN), lse(c.B * c.H * c.T, NAN), dqkv(N * QS, NAN);
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), s, cu.data(), n);
  cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s, cu.data(), n);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t first = cu[k], len = cu[k + 1] - cu[k], b = first / c.T, t0 = first % c.T;
    SCOPED_TRACE(::testing::Message() << "document " << k << " (tokens " << first << ".." << first + len - 1 << ")");
    const cpu::AttentionShape one{1, len, c.H, c.KV, c.hd};
    const std::vector<float> q(qkv.begin() + first * QS, qkv.begin() + (first + len) * QS);
    const std::vector<float> d(dout.begin() + first * OS, dout.begin() + (first + len) * OS);
    std::vector<float> o(len * OS), l(c.H * len), dq(len * QS);
    cpu::attention_forward(o.data(), l.data(), q.data(), one);
    cpu::attention_backward(dq.data(), d.data(), q.data(), o.data(), l.data(), one);
    for (int64_t i = 0; i < len * OS; ++i) ASSERT_EQ(out[first * OS + i], o[i]) << "out " << i;
    for (int64_t i = 0; i < len * QS; ++i) ASSERT_EQ(dqkv[first * QS + i], dq[i]) << "dqkv " << i;
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t t = 0; t < len; ++t)
        ASSERT_EQ(lse[(b * c.H + h) * c.T + t0 + t], l[h * len + t]) << "lse head " << h << " position " << t;
  }
}

TEST_P(MaskedAttentionCpu, BackwardMatchesFiniteDifferences) {
  const PackedCase& c = GetParam();
  const cpu::AttentionShape s{c.B, c.T, c.H, c.KV, c.hd};
  const std::vector<int32_t> cu = test::pack_documents(c.B, c.T, c.lengths);
  const int64_t n = static_cast<int64_t>(cu.size()) - 1, N = c.B * c.T;
  auto qkv = randn(N * s.qkv_stride(), 63), r = randn(N * s.out_stride(), 64);
  std::vector<float> out(N * s.out_stride()), lse(c.B * c.H * c.T), dqkv(qkv.size(), NAN);
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), s, cu.data(), n);
  cpu::attention_backward(dqkv.data(), r.data(), qkv.data(), out.data(), lse.data(), s, cu.data(), n);
  expect_gradient("dqkv", qkv, dqkv, [&] {
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), s, cu.data(), n);
    return dot(out, r);
  }, 48, 1e-2f);
}

INSTANTIATE_TEST_SUITE_P(Packed, MaskedAttentionCpu, ::testing::ValuesIn(packed_cases()),
                         [](const ::testing::TestParamInfo<PackedCase>& i) { return std::string(i.param.name); });

TEST(MaskedAttentionCpu, OneSegmentPerRowIsPlainCausal) {
  const cpu::AttentionShape s{3, 10, 4, 2, 8};
  const std::vector<int32_t> cu{0, 10, 20, 30};
  auto qkv = randn(30 * s.qkv_stride(), 65), dout = randn(30 * s.out_stride(), 66);
  std::vector<float> o1(30 * s.out_stride()), o2(o1.size()), l1(3 * 4 * 10), l2(l1.size());
  std::vector<float> d1(qkv.size()), d2(qkv.size());
  cpu::attention_forward(o1.data(), l1.data(), qkv.data(), s);
  cpu::attention_backward(d1.data(), dout.data(), qkv.data(), o1.data(), l1.data(), s);
  cpu::attention_forward(o2.data(), l2.data(), qkv.data(), s, cu.data(), 3);
  cpu::attention_backward(d2.data(), dout.data(), qkv.data(), o2.data(), l2.data(), s, cu.data(), 3);
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(d1, d2);
}

TEST(MaskedAttentionCpu, BadSegmentsAreRefusedWithTheEntryNamed) {
  const std::vector<int32_t> good{0, 3, 8, 11, 16};
  EXPECT_NO_THROW(cpu::check_segments(good.data(), 4, 2, 8));
  auto err = [](std::vector<int32_t> cu, int64_t B, int64_t T) {
    return test::error_of([&] { cpu::check_segments(cu.data(), static_cast<int64_t>(cu.size()) - 1, B, T); });
  };
  EXPECT_NE(err({1, 8, 16}, 2, 8).find("cu_seqlens[0] is 1"), std::string::npos);
  EXPECT_NE(err({0, 8, 15}, 2, 8).find("must be the token count B*T = 16"), std::string::npos);
  EXPECT_NE(err({0, 5, 5, 8, 16}, 2, 8).find("cu_seqlens[2] = 5 is not above"), std::string::npos);
  EXPECT_NE(err({0, 5, 12, 16}, 2, 8).find("crosses the start of row 1"), std::string::npos);
  EXPECT_NE(err({0, 16}, 2, 8).find("1 segments for 2 rows"), std::string::npos);
}

TEST(CrossEntropyCpu, LossGradientAndIgnoredTargets) {
  for (auto [N, V] : {std::pair<int64_t, int64_t>{1, 2}, {7, 11}, {16, 300}}) {
    auto logits = randn(N * V, 61, 3.0f);
    std::vector<int32_t> tgt(N);
    for (int64_t n = 0; n < N; ++n) tgt[n] = static_cast<int32_t>(hash_u64(62, n) % V);
    if (N > 2) tgt[1] = -1;  // ignored
    const float zw = 1e-2f;
    int64_t valid = 0;
    for (auto t : tgt) valid += t >= 0;
    const float scale = 1.0f / valid;
    std::vector<float> d(N * V, NAN);
    cpu::LossSums s = cpu::cross_entropy(logits.data(), d.data(), tgt.data(), N, V, zw, scale);
    EXPECT_EQ(s.n_valid, valid);
    double ce = 0, z = 0;
    for (int64_t n = 0; n < N; ++n) {
      if (tgt[n] < 0) continue;
      double mx = -1e300, sum = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(logits[n * V + v]));
      for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[n * V + v] - mx);
      ce += mx + std::log(sum) - logits[n * V + tgt[n]];
      z += mx * mx;
    }
    EXPECT_NEAR(s.ce, ce, 1e-6 * (1 + ce));
    EXPECT_NEAR(s.z, z, 1e-6 * (1 + z));
    if (N > 2) {
      for (int64_t v = 0; v < V; ++v) EXPECT_EQ(d[1 * V + v], 0.0f);
    }
    expect_gradient("dlogits", logits, d, [&] {
      cpu::LossSums q = cpu::cross_entropy(logits.data(), nullptr, tgt.data(), N, V, zw, scale);
      return (q.ce + zw * q.z) * scale;
    }, 32, 1e-3f);
  }
}

TEST(CrossEntropyCpu, RefusesTargetsOutsideVocabulary) {
  std::vector<float> l(4, 0.0f);
  std::vector<int32_t> t = {0, 2};
  EXPECT_THROW(cpu::cross_entropy(l.data(), nullptr, t.data(), 2, 2, 0.0f, 1.0f), Error);
}

TEST(AdamwCpu, MatchesPyTorchFormula) {
  const size_t n = 37;
  auto p = randn(n, 71), g = randn(n, 72), m = randn(n, 73, 0.1f), v = randn(n, 74, 0.1f);
  for (auto& x : v) x = x * x;
  auto p0 = p, m0 = m, v0 = v;
  const cpu::AdamWStep s{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, 0.5f};
  cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, s);
  for (size_t i = 0; i < n; ++i) {
    const double gi = g[i] * 0.5;
    const double mi = 0.9 * m0[i] + 0.1 * gi, vi = 0.95 * v0[i] + 0.05 * gi * gi;
    const double bc1 = 1 - std::pow(0.9, 3), bc2 = 1 - std::pow(0.95, 3);
    const double pi = p0[i] * (1 - 1e-2 * 0.1) - 1e-2 / bc1 * mi / (std::sqrt(vi) / std::sqrt(bc2) + 1e-8);
    EXPECT_NEAR(m[i], mi, 1e-6);
    EXPECT_NEAR(v[i], vi, 1e-6);
    EXPECT_NEAR(p[i], pi, 1e-5);
  }
}

TEST(AdamwCpu, SumSquaresIsExactAndThreadIndependent) {
  auto g = randn(200003, 75);
  double ref = 0;
  for (float x : g) ref += double(x) * x;
  EXPECT_NEAR(cpu::sum_squares(g.data(), g.size()), ref, 1e-9 * ref);
  EXPECT_EQ(cpu::sum_squares(g.data(), 0), 0.0);
}

// The FP8 formats from their definitions: the GPU's conversions are held to
// these bit for bit (CudaKernels.Fp8CastsMatchTheCpu).
TEST(Fp8Cpu, EncodesByTheFormatsDefinitions) {
  using F = Fp8Format;
  EXPECT_EQ(cpu::fp8_encode(1.0f, F::e4m3), 0x38);  // exponent 7 (bias 7), mantissa 0
  EXPECT_EQ(cpu::fp8_encode(448.0f, F::e4m3), 0x7e);
  EXPECT_EQ(cpu::fp8_encode(-448.0f, F::e4m3), 0xfe);
  EXPECT_EQ(cpu::fp8_encode(465.0f, F::e4m3), 0x7e);      // past max: saturated, never NaN
  EXPECT_EQ(cpu::fp8_encode(INFINITY, F::e4m3), 0x7e);
  EXPECT_EQ(cpu::fp8_encode(std::ldexp(1.0f, -9), F::e4m3), 0x01);      // smallest subnormal
  EXPECT_EQ(cpu::fp8_encode(std::ldexp(1.0f, -10), F::e4m3), 0x00);     // half of it: ties to even (0)
  EXPECT_EQ(cpu::fp8_encode(std::ldexp(3.0f, -10), F::e4m3), 0x02);     // 1.5 of it: ties to even (2)
  EXPECT_EQ(cpu::fp8_encode(1.0625f, F::e4m3), 0x38);  // halfway 1 and 1.125: to even (1)
  EXPECT_EQ(cpu::fp8_encode(1.1875f, F::e4m3), 0x3a);  // halfway 1.125 and 1.25: to even (1.25)
  EXPECT_EQ(cpu::fp8_encode(-0.0f, F::e4m3), 0x80);
  EXPECT_TRUE(std::isnan(cpu::fp8_decode(cpu::fp8_encode(NAN, F::e4m3), F::e4m3)));
  EXPECT_EQ(cpu::fp8_encode(1.0f, F::e5m2), 0x3c);
  EXPECT_EQ(cpu::fp8_encode(57344.0f, F::e5m2), 0x7b);
  EXPECT_EQ(cpu::fp8_encode(1e6f, F::e5m2), 0x7b);
  EXPECT_EQ(cpu::fp8_encode(std::ldexp(1.0f, -16), F::e5m2), 0x01);
  EXPECT_TRUE(std::isnan(cpu::fp8_decode(cpu::fp8_encode(NAN, F::e5m2), F::e5m2)));
  EXPECT_EQ(cpu::fp8_decode(0x7c, F::e5m2), INFINITY);
  // Every finite byte decodes to a value that encodes back to it.
  for (F f : {F::e4m3, F::e5m2})
    for (int b = 0; b < 256; ++b) {
      const float v = cpu::fp8_decode(static_cast<uint8_t>(b), f);
      if (!std::isfinite(v)) continue;
      EXPECT_EQ(cpu::fp8_encode(v, f), b) << "byte " << b << " value " << v;
    }
}

TEST(Fp8Cpu, ScalesArePowersOfTwoThatFitTheMaximum) {
  using F = Fp8Format;
  EXPECT_EQ(cpu::fp8_scale(448.0f, F::e4m3), 1.0f);
  EXPECT_EQ(cpu::fp8_scale(1.0f, F::e4m3), 256.0f);    // 448 → the power of two below
  EXPECT_EQ(cpu::fp8_scale(3.5f, F::e4m3), 128.0f);    // exactly fits: 3.5 · 128 = 448
  EXPECT_EQ(cpu::fp8_scale(3.6f, F::e4m3), 64.0f);     // 128 would pass 448
  EXPECT_EQ(cpu::fp8_scale(1.0f, F::e5m2), 32768.0f);
  EXPECT_EQ(cpu::fp8_scale(0.0f, F::e4m3), 1.0f);
  EXPECT_EQ(cpu::fp8_scale(1e-40f, F::e4m3), std::ldexp(1.0f, 100));
  EXPECT_TRUE(std::isnan(cpu::fp8_scale(INFINITY, F::e4m3)));
  EXPECT_TRUE(std::isnan(cpu::fp8_scale(NAN, F::e5m2)));
  std::vector<float> x = {0.5f, -3.0f, 2.0f};
  EXPECT_EQ(cpu::absmax(x.data(), 3), 3.0f);
  x.push_back(NAN);
  EXPECT_TRUE(std::isnan(cpu::absmax(x.data(), 4)));
  // A scaled tensor fills the format: its largest value lands in the top two binades.
  for (float amax : {1e-3f, 0.37f, 7.0f, 3000.0f}) {
    const float s = cpu::fp8_scale(amax, F::e4m3);
    EXPECT_LE(amax * s, 448.0f);
    EXPECT_GT(amax * s, 224.0f - 1e-3f);
  }
}

}  // namespace
}  // namespace intellect
