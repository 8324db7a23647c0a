// The whole CPU model: gradients against central differences, and logits,
// loss and every gradient against PyTorch's on the HF fixture.
#include <cstdlib>
#include <filesystem>

#include "ckpt/hf_llama.h"
#include "ckpt/safetensors.h"
#include "model/init.h"
#include "model/llama_cpu.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

ModelConfig small_config(bool tied, bool llama3) {
  ModelConfig c;
  c.vocab_size = 23;
  c.dim = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 6;  // q_dim 24 != dim: exercises the rectangular wo
  c.ffn_dim = 20;
  c.max_seq_len = 16;
  c.rope_theta = 10000.0;
  c.tie_embeddings = tied;
  c.init_std = 0.4;
  if (llama3) {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.original_max_position = 8;
  }
  return c;
}

// Every parameter's gradient against central differences, on B=2 rows of 7
// tokens; cu_seqlens (nullable) masks attention per document.
void expect_gradients_match(const ModelConfig& c, const int32_t* cu_seqlens, int64_t n_segments) {
  LlamaCpu model(c);
  const ParamLayout& L = model.layout();
  std::vector<float> p(L.total());
  init_params(p.data(), L, c, 7);
  for (auto& e : L.entries())  // non-trivial norm gains
    if (e.is_norm)
      for (size_t i = 0; i < e.numel; ++i) p[e.offset + i] = 1.0f + 0.3f * float(normal01(8, e.offset + i));
  const int64_t B = 2, T = 7;
  std::vector<int32_t> x(B * T), y(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    x[i] = static_cast<int32_t>(hash_u64(9, i) % c.vocab_size);
    y[i] = static_cast<int32_t>(hash_u64(10, i) % c.vocab_size);
  }
  y[3] = -1;
  const float zw = 0.05f, scale = 1.0f / (B * T - 1);
  std::vector<float> g(L.total(), 0.0f);
  model.forward(p.data(), x.data(), y.data(), B, T, zw, scale, cu_seqlens, n_segments);
  model.backward(p.data(), g.data());
  LlamaCpu probe(c);
  auto loss = [&] {
    cpu::LossSums s = probe.forward(p.data(), x.data(), y.data(), B, T, zw, scale, cu_seqlens, n_segments);
    return (s.ce + zw * s.z) * scale;
  };
  for (const ParamEntry& e : L.entries()) {
    std::vector<float> grad(g.begin() + e.offset, g.begin() + e.offset + e.numel);
    double max_g = 1e-4;
    for (float v : grad) max_g = std::max(max_g, double(std::fabs(v)));
    for (int s = 0; s < 6; ++s) {
      const size_t i = e.offset + hash_u64(11, s + e.offset) % e.numel;
      const float saved = p[i], h = 2e-3f;  // small: a max-z-loss argmax must not flip
      p[i] = saved + h;
      const double lp = loss();
      p[i] = saved - h;
      const double lm = loss();
      p[i] = saved;
      EXPECT_NEAR(g[i], (lp - lm) / (2 * h), 3e-2 * max_g) << e.name << " element " << i - e.offset;
    }
  }
}

class LlamaCpuGradient : public ::testing::TestWithParam<std::pair<bool, bool>> {};

TEST_P(LlamaCpuGradient, MatchesFiniteDifferences) {
  const auto [tied, llama3] = GetParam();
  expect_gradients_match(small_config(tied, llama3), nullptr, 0);
}

TEST(LlamaCpu, DocumentMaskedGradientsMatchFiniteDifferences) {
  const std::vector<int32_t> cu{0, 3, 4, 7, 9, 14};  // documents of 3, 1 and 3 tokens, then 2 and 5
  expect_gradients_match(small_config(false, false), cu.data(), 5);
}

// A document's logits depend on its own tokens only: rewriting another
// document changes nothing else (bit for bit); without the mask it would.
TEST(LlamaCpu, PackedDocumentsDoNotSeeEachOther) {
  const ModelConfig c = small_config(false, false);
  std::vector<float> p(ParamLayout(c).total());
  init_params(p.data(), ParamLayout(c), c, 12);
  const int64_t B = 2, T = 12, V = c.vocab_size;
  const std::vector<int32_t> cu = test::pack_documents(B, T, {4, 5, 6, 9});  // 0-3 | 4-8 | 9-11, 12-14 | 15-23
  ASSERT_EQ(cu, (std::vector<int32_t>{0, 4, 9, 12, 15, 24}));
  std::vector<int32_t> x(B * T);
  for (int64_t i = 0; i < B * T; ++i) x[i] = static_cast<int32_t>(hash_u64(13, i) % V);
  std::vector<int32_t> y = x;  // (targets are irrelevant here)
  auto logits = [&](const std::vector<int32_t>& tokens, bool masked) {
    LlamaCpu m(c);
    m.forward(p.data(), tokens.data(), y.data(), B, T, 0.0f, 1.0f, masked ? cu.data() : nullptr, 5);
    return std::vector<float>(m.logits(), m.logits() + B * T * V);
  };
  std::vector<int32_t> x2 = x;
  for (int64_t i = 4; i < 9; ++i) x2[i] = static_cast<int32_t>((x[i] + 1) % V);  // rewrite document 1
  const std::vector<float> a = logits(x, true), b = logits(x2, true);
  for (int64_t i = 0; i < B * T * V; ++i) {
    const int64_t token = i / V;
    if (token >= 4 && token < 9) continue;
    ASSERT_EQ(a[i], b[i]) << "token " << token << " saw document 1";
  }
  EXPECT_GT(test::rel_error(std::vector<float>(a.begin() + 4 * V, a.begin() + 9 * V),
                            std::vector<float>(b.begin() + 4 * V, b.begin() + 9 * V)), 1e-3);
  const std::vector<float> ua = logits(x, false), ub = logits(x2, false);
  EXPECT_GT(test::rel_error(std::vector<float>(ua.begin() + 9 * V, ua.begin() + 12 * V),
                            std::vector<float>(ub.begin() + 9 * V, ub.begin() + 12 * V)), 1e-3)
      << "unmasked, document 2 should see document 1";
}

INSTANTIATE_TEST_SUITE_P(Variants, LlamaCpuGradient,
                         ::testing::Values(std::pair{false, false}, std::pair{true, false},
                                           std::pair{false, true}));

TEST(LlamaCpu, GradientsAccumulateOverCalls) {
  const ModelConfig c = small_config(false, false);
  LlamaCpu model(c);
  std::vector<float> p(model.layout().total()), g1(p.size(), 0.0f), g2(p.size(), 0.0f);
  init_params(p.data(), model.layout(), c, 3);
  std::vector<int32_t> x(10), y(10);
  for (int i = 0; i < 10; ++i) x[i] = i, y[i] = (i * 7) % 23;
  model.forward(p.data(), x.data(), y.data(), 1, 10, 0.0f, 0.1f);
  model.backward(p.data(), g1.data());
  model.backward(p.data(), g2.data());
  model.backward(p.data(), g2.data());
  for (size_t i = 0; i < p.size(); ++i) ASSERT_NEAR(g2[i], 2 * g1[i], 1e-6 + 1e-5 * std::fabs(g1[i]));
}

const std::string kFixture = test::shared_data_dir() + "/fixtures/tiny-llama-hf";

TEST(HfFixture, ConfigIsReadFromTransformersV5Form) {
  if (!path_exists(kFixture + "/config.json")) GTEST_SKIP() << "no fixture at " << kFixture;
  HfModel m = load_hf_model(kFixture);
  EXPECT_EQ(m.config.vocab_size, 512);
  EXPECT_EQ(m.config.dim, 64);
  EXPECT_EQ(m.config.n_layers, 2);
  EXPECT_EQ(m.config.n_heads, 4);
  EXPECT_EQ(m.config.n_kv_heads, 2);
  EXPECT_EQ(m.config.head_dim, 16);
  EXPECT_EQ(m.config.ffn_dim, 176);
  EXPECT_DOUBLE_EQ(m.config.rope_theta, 500000.0);
  EXPECT_FALSE(m.config.tie_embeddings);
}

// Runs the real tool, as a user would, and compares its output with PyTorch's.
TEST(HfFixture, IntellectForwardMatchesPyTorchLogitsLossAndGradients) {
  if (!path_exists(kFixture + "/golden.safetensors")) GTEST_SKIP() << "no fixture at " << kFixture;
  const std::string out = ::testing::TempDir() + "/forward_out.safetensors";
  std::filesystem::remove(out);
  const std::string cmd = test::binary_dir() + "/intellect_forward --model " + kFixture +
                          " --tokens " + kFixture + "/golden.safetensors --out " + out + " --grads";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const st::File got = st::File::open(out), want = st::File::open(kFixture + "/golden.safetensors");
  EXPECT_EQ(got.get("logits").shape, want.get("logits").shape);
  EXPECT_LT(test::rel_error(got.read_f32("logits"), want.read_f32("logits")), 1e-4);
  const float loss = got.read_f32("loss")[0], ref = want.read_f32("loss")[0];
  EXPECT_NEAR(loss, ref, 1e-4 * std::fabs(ref));
  int grads = 0;
  for (const st::TensorInfo& t : want.tensors()) {
    if (!t.name.starts_with("grad.")) continue;
    ++grads;
    ASSERT_NE(got.find(t.name), nullptr) << t.name;
    EXPECT_EQ(got.get(t.name).shape, t.shape) << t.name;
    EXPECT_LT(test::rel_error(got.read_f32(t.name), want.read_f32(t.name)), 1e-4) << t.name;
  }
  EXPECT_EQ(grads, 2 * 9 + 3);  // every parameter of the fixture has a golden gradient
}

TEST(HfFixture, RefusesBadDirectories) {
  const std::string dir = ::testing::TempDir() + "/not_a_model";
  std::filesystem::create_directories(dir);
  EXPECT_THROW(load_hf_model(dir), Error);
  if (!path_exists(kFixture + "/config.json")) return;
  // Right config, wrong shapes: a config that claims a bigger model.
  const std::string dir2 = ::testing::TempDir() + "/wrong_shape";
  std::filesystem::create_directories(dir2);
  auto cfg = nlohmann::json::parse(read_text_file(kFixture + "/config.json"));
  cfg["intermediate_size"] = 200;
  const std::string text = cfg.dump();
  write_file_atomic(dir2 + "/config.json", text.data(), text.size());
  std::filesystem::copy_file(kFixture + "/model.safetensors", dir2 + "/model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  try {
    load_hf_model(dir2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json implies [64,200]"), std::string::npos) << e.what();
  }
}

TEST(HfConfig, RopeForms) {
  nlohmann::json base = {{"model_type", "llama"}, {"vocab_size", 10}, {"hidden_size", 8},
                         {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                         {"intermediate_size", 16}};
  nlohmann::json old_form = base;
  old_form["rope_theta"] = 500000.0;
  old_form["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                              {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  nlohmann::json v5 = base;
  v5["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "llama3"}, {"factor", 32.0},
                           {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192}};
  for (auto& j : {old_form, v5}) {
    ModelConfig c = model_config_from_hf(j, "config.json");
    EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rope_scaling.type, "llama3");
    EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
    EXPECT_EQ(c.n_kv_heads, 2);
    EXPECT_EQ(c.head_dim, 4);
  }
  nlohmann::json bad = base;
  bad["rope_parameters"] = {{"rope_type", "yarn"}};
  EXPECT_THROW(model_config_from_hf(bad, "config.json"), Error);
  bad = base;
  bad["model_type"] = "mistral";
  EXPECT_THROW(model_config_from_hf(bad, "config.json"), Error);
}

}  // namespace
}  // namespace intellect
