// Attention masked per packed document on the GPU (the fallback kernel and
// cuDNN's ragged SDPA) against the CPU reference, with poisoned outputs:
// documents of one token, whole rows, many short ones, random lengths, a long
// one among short ones, and an odd row length.
#include <algorithm>
#include <cstdio>

#include "gpu_util.h"
#include "kernels/attention.h"
#include "kernels/attention_cudnn.h"

namespace intellect {
namespace {

using namespace test;

struct DocCase {
  const char* name;
  int64_t B, T, H, KV, hd;
  std::vector<int64_t> lengths;  // laid end to end, cut at row starts (pack_documents)
};
void PrintTo(const DocCase& c, std::ostream* os) { *os << c.name; }

std::vector<DocCase> doc_cases() {
  return {
      {"one_token_documents", 2, 64, 4, 2, 64, std::vector<int64_t>(128, 1)},
      {"whole_rows", 2, 256, 8, 2, 64, {256, 256}},
      {"many_short", 2, 256, 8, 2, 64, random_lengths(512, 6, 3)},
      {"random_lengths", 2, 256, 8, 2, 64, random_lengths(512, 150, 4)},
      {"long_among_short", 1, 1024, 4, 1, 128, {3, 900, 1, 1, 40, 2, 77}},
      {"odd_row_length", 3, 200, 8, 4, 32, random_lengths(600, 90, 5)},
  };
}

struct Result {
  std::vector<float> out, lse, dqkv;  // lse as [B, H, T]
};

// The CPU reference on the GPU's bf16 inputs.
Result reference(const cpu::AttentionShape& s, const std::vector<float>& qkv, const std::vector<float>& dout,
                 const std::vector<int32_t>* cu) {
  const int64_t N = s.B * s.T, n = cu ? static_cast<int64_t>(cu->size()) - 1 : 0;
  Result r{std::vector<float>(N * s.out_stride()), std::vector<float>(s.B * s.n_heads * s.T),
           std::vector<float>(qkv.size())};
  const int32_t* segs = cu ? cu->data() : nullptr;
  cpu::attention_forward(r.out.data(), r.lse.data(), qkv.data(), s, segs, n);
  cpu::attention_backward(r.dqkv.data(), dout.data(), qkv.data(), r.out.data(), r.lse.data(), s, segs, n);
  return r;
}

Result run_fallback(const cpu::AttentionShape& s, const std::vector<float>& qkv, const std::vector<float>& dout,
                    const std::vector<int32_t>* cu) {
  const int64_t N = s.B * s.T, n = cu ? static_cast<int64_t>(cu->size()) - 1 : 0;
  DeviceBuffer<bf16> d_qkv(qkv.size()), d_out(N * s.out_stride()), d_dout(dout.size()), d_dqkv(qkv.size());
  DeviceBuffer<float> d_lse(s.B * s.n_heads * s.T), scratch(s.B * s.n_heads * s.T);
  DeviceBuffer<int32_t> d_cu(cu ? cu->size() : 0);
  d_qkv.upload(to_bf16(qkv));
  d_dout.upload(to_bf16(dout));
  if (cu) d_cu.upload(*cu);
  cuda::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s, nullptr, d_cu.get(), n);
  cuda::attention_backward(d_dqkv.get(), scratch.get(), d_dout.get(), d_qkv.get(), d_out.get(), d_lse.get(), s,
                           nullptr, d_cu.get(), n);
  return {to_f32(d_out.download()), d_lse.download(), to_f32(d_dqkv.download())};
}

// cuDNN's ragged path; its lse comes back token-major and is returned as [B, H, T].
Result run_cudnn_documents(const cpu::AttentionShape& s, const std::vector<float>& qkv,
                           const std::vector<float>& dout, const std::vector<int32_t>& cu) {
  const int64_t N = s.B * s.T, H = s.n_heads, n = static_cast<int64_t>(cu.size()) - 1;
  cuda::CudnnAttention attn(s, nullptr, true);
  EXPECT_TRUE(attn.documents_ready()) << attn.documents_error();
  if (!attn.documents_ready()) return {};
  std::printf("%s\n", attn.describe().c_str());
  std::vector<int64_t> host((attn.document_bytes() + 7) / 8 + 1);  // 8-byte aligned
  const size_t used = attn.schedule_documents(cu.data(), n, host.data());
  EXPECT_LE(used, attn.document_bytes());
  std::vector<uint8_t> bytes(reinterpret_cast<uint8_t*>(host.data()), reinterpret_cast<uint8_t*>(host.data()) + used);
  DeviceBuffer<uint8_t> d_sched(used), ws(std::max<size_t>(attn.workspace_bytes(), 1));
  d_sched.upload(bytes);
  DeviceBuffer<bf16> d_qkv(qkv.size()), d_out(N * s.out_stride()), d_dout(dout.size()), d_dqkv(qkv.size());
  DeviceBuffer<float> d_lse(N * H);
  d_qkv.upload(to_bf16(qkv));
  d_dout.upload(to_bf16(dout));
  attn.forward_documents(d_out.get(), d_lse.get(), d_qkv.get(), d_sched.get(), ws.get());
  attn.backward_documents(d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out.get(), d_lse.get(), d_sched.get(), ws.get());
  const std::vector<float> token_major = d_lse.download();
  std::vector<float> lse(token_major.size());
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < s.T; ++t) lse[(b * H + h) * s.T + t] = token_major[(b * s.T + t) * H + h];
  return {to_f32(d_out.download()), lse, to_f32(d_dqkv.download())};
}

void expect_close(const Result& got, const Result& ref) {
  EXPECT_LT(rel_error(got.out, ref.out), kBf16Tol) << "out";
  EXPECT_LT(rel_error(got.lse, ref.lse), 1e-3) << "lse";
  EXPECT_LT(rel_error(got.dqkv, ref.dqkv), 3e-2) << "dq, dk, dv";
}

class AttentionDocuments : public ::testing::TestWithParam<DocCase> {};

TEST_P(AttentionDocuments, FallbackMatchesCpu) {
  REQUIRE_GPU();
  const DocCase& c = GetParam();
  const cpu::AttentionShape s{c.B, c.T, c.H, c.KV, c.hd};
  const std::vector<int32_t> cu = pack_documents(c.B, c.T, c.lengths);
  const auto qkv = randn_bf16(c.B * c.T * s.qkv_stride(), 31), dout = randn_bf16(c.B * c.T * s.out_stride(), 32);
  expect_close(run_fallback(s, qkv, dout, &cu), reference(s, qkv, dout, &cu));
}

TEST_P(AttentionDocuments, CudnnRaggedMatchesCpu) {
  REQUIRE_GPU();
  if (!cuda::CudnnAttention::available()) GTEST_SKIP() << "cuDNN not available at run time";
  const DocCase& c = GetParam();
  const cpu::AttentionShape s{c.B, c.T, c.H, c.KV, c.hd};
  const std::vector<int32_t> cu = pack_documents(c.B, c.T, c.lengths);
  const auto qkv = randn_bf16(c.B * c.T * s.qkv_stride(), 33), dout = randn_bf16(c.B * c.T * s.out_stride(), 34);
  const Result got = run_cudnn_documents(s, qkv, dout, cu);
  if (got.out.empty()) return;  // documents_ready() failed above, with cuDNN's reason
  expect_close(got, reference(s, qkv, dout, &cu));
}

INSTANTIATE_TEST_SUITE_P(Packed, AttentionDocuments, ::testing::ValuesIn(doc_cases()),
                         [](const ::testing::TestParamInfo<DocCase>& i) { return std::string(i.param.name); });

// One segment per row is plain causal attention: the fallback gives the same
// bits either way, cuDNN's ragged plans the same values as its plain ones.
TEST(AttentionDocuments, OneSegmentPerRowIsPlainCausal) {
  REQUIRE_GPU();
  const cpu::AttentionShape s{2, 256, 8, 2, 64};
  const std::vector<int32_t> cu{0, 256, 512};
  const auto qkv = randn_bf16(512 * s.qkv_stride(), 35), dout = randn_bf16(512 * s.out_stride(), 36);
  const Result plain = run_fallback(s, qkv, dout, nullptr), masked = run_fallback(s, qkv, dout, &cu);
  EXPECT_EQ(plain.out, masked.out);
  EXPECT_EQ(plain.lse, masked.lse);
  EXPECT_EQ(plain.dqkv, masked.dqkv);
  if (!cuda::CudnnAttention::available()) return;
  const Result ragged = run_cudnn_documents(s, qkv, dout, cu);
  if (ragged.out.empty()) return;
  expect_close(ragged, reference(s, qkv, dout, nullptr));
}

// The schedule covers every document exactly once, whatever the mix of lengths,
// and stays within document_bytes() for the worst case (every token a document).
TEST(AttentionDocuments, CudnnScheduleFitsItsBoundForOneTokenDocuments) {
  REQUIRE_GPU();
  if (!cuda::CudnnAttention::available()) GTEST_SKIP() << "cuDNN not available at run time";
  const cpu::AttentionShape s{1, 1024, 4, 1, 128};
  cuda::CudnnAttention attn(s, nullptr, true);
  ASSERT_TRUE(attn.documents_ready()) << attn.documents_error();
  std::vector<int64_t> host(attn.document_bytes() / 8 + 1);
  for (const std::vector<int64_t>& lengths :
       {std::vector<int64_t>(1024, 1), std::vector<int64_t>{1024}, random_lengths(1024, 40, 7)}) {
    const std::vector<int32_t> cu = pack_documents(1, 1024, lengths);
    EXPECT_LE(attn.schedule_documents(cu.data(), static_cast<int64_t>(cu.size()) - 1, host.data()),
              attn.document_bytes());
  }
}

}  // namespace
}  // namespace intellect
