// ckpt_convert: checkpoint -> HuggingFace export and HuggingFace -> checkpoint
// import, through the library and through the tool as a user runs it.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint.h"
#include "ckpt/hf_export.h"
#include "ckpt/hf_llama.h"
#include "ckpt/safetensors.h"
#include "model/layout.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kTool = test::binary_dir() + "/ckpt_convert";
const std::string kForward = test::binary_dir() + "/intellect_forward";
const std::string kFixture = test::shared_data_dir() + "/fixtures/tiny-llama-hf";


// A fresh directory for one test.
std::string scratch(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/ckpt_convert_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

ModelConfig small_config(bool tied, bool llama3) {
  ModelConfig c;
  c.vocab_size = 96;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.ffn_dim = 48;
  c.max_seq_len = 64;
  c.rope_theta = 500000.0;
  c.norm_eps = 1e-5;
  c.tie_embeddings = tied;
  c.init_std = 0.013;
  c.bos_id = 1;
  c.eos_id = 2;
  if (llama3) {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = 8.0;
    c.rope_scaling.low_freq_factor = 1.0;
    c.rope_scaling.high_freq_factor = 4.0;
    c.rope_scaling.original_max_position = 32;
  }
  return c;
}

// Random parameters plus values that exercise bf16 rounding: exact ties
// (both directions of even), values just past a tie, signed zero, a subnormal.
std::vector<float> test_params(const ModelConfig& c, uint64_t seed) {
  std::vector<float> p = test::randn(ParamLayout(c).total(), seed, 0.7f);
  const uint32_t special[] = {0x3f808000u,  // 1 + 2^-8: tie, rounds down to even
                              0x3f818000u,  // tie, rounds up to even
                              0xbf818000u, 0x3f808001u, 0x80000000u, 0x00000001u, 0x7f7fffffu};
  for (size_t i = 0; i < std::size(special); ++i) p[1 + i] = std::bit_cast<float>(special[i]);
  return p;
}

// Writes a checkpoint of `c` under root with two tokenizer files.
CheckpointState make_checkpoint(const std::string& root, const ModelConfig& c, int64_t step,
                                uint64_t seed = 7) {
  const std::string tok_dir = root + "_tokenizer_src";
  fs::create_directories(tok_dir);
  const std::string tj = "{\"model\": {\"type\": \"BPE\"}, \"note\": \"test tokenizer\"}\n";
  const std::string tc = "{\"bos_token\": \"<s>\"}\n";
  write_file_atomic(tok_dir + "/tokenizer.json", tj.data(), tj.size());
  write_file_atomic(tok_dir + "/tokenizer_config.json", tc.data(), tc.size());
  CheckpointState s;
  s.step = step;
  s.config = json{{"model", c.to_json()}};
  s.params = test_params(c, seed);
  s.exp_avg = std::vector<float>(s.params.size(), 0.25f);
  s.exp_avg_sq = std::vector<float>(s.params.size(), 0.5f);
  s.optimizer_step = step;
  s.tokenizer_files = {tok_dir + "/tokenizer.json", tok_dir + "/tokenizer_config.json"};
  write_checkpoint(root, s);
  return s;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Index of the first differing value, for messages.
size_t first_difference(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) return i;
  return std::min(a.size(), b.size());
}

json read_json(const std::string& path) { return json::parse(read_text_file(path)); }

std::set<std::string> dir_files(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

// ------------------------------------------------------------------ sizes ---

TEST(CkptConvert, ParsesSizesAsTransformersDoes) {
  EXPECT_EQ(parse_byte_size("5GB", "s"), 5'000'000'000u);
  EXPECT_EQ(parse_byte_size("500MB", "s"), 500'000'000u);
  EXPECT_EQ(parse_byte_size("1.5GiB", "s"), 1610612736u);
  EXPECT_EQ(parse_byte_size("64KiB", "s"), 65536u);
  EXPECT_EQ(parse_byte_size("2 gb", "s"), 2'000'000'000u);
  EXPECT_EQ(parse_byte_size("123", "s"), 123u);
  EXPECT_EQ(parse_byte_size("123B", "s"), 123u);
  EXPECT_EQ(parse_byte_size("1TB", "s"), 1'000'000'000'000u);
  for (const char* bad : {"", "GB", "abc", "5XB", "0", "-1", "1.2.3", "0.1"}) {
    try {
      parse_byte_size(bad, "--shard-size");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--shard-size '" + std::string(bad) + "'"), std::string::npos)
          << e.what();
    }
  }
}

TEST(CkptConvert, ShardPlanFollowsTransformersRule) {
  const ModelConfig c = small_config(false, false);
  const std::vector<HfTensor> map = hf_tensor_map(c, ParamLayout(c));
  // Everything fits: one file with the unsharded name.
  auto one = plan_hf_shards(c, HfDtype::F32, uint64_t(1) << 40);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].file, "model.safetensors");
  EXPECT_EQ(one[0].tensors.size(), map.size());
  // A limit smaller than the largest tensor: that tensor gets a file alone,
  // and every file with several tensors stays within the limit.
  const uint64_t limit = 4000;  // embed is 96*32*4 = 12288 bytes
  auto many = plan_hf_shards(c, HfDtype::F32, limit);
  ASSERT_GT(many.size(), 3u);
  size_t next = 0;
  for (size_t s = 0; s < many.size(); ++s) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", s + 1, many.size());
    EXPECT_EQ(many[s].file, want);
    if (many[s].tensors.size() > 1) {
      EXPECT_LE(many[s].bytes, limit) << many[s].file;
    }
    for (size_t t : many[s].tensors) EXPECT_EQ(t, next++);  // HF order kept
    if (s + 1 < many.size()) {
      // Greedy: the next shard's first tensor did not fit in this one.
      const uint64_t first_next = map[many[s + 1].tensors[0]].numel * 4;
      EXPECT_GT(many[s].bytes + first_next, limit);
    }
  }
  EXPECT_EQ(next, map.size());
}

// ------------------------------------------------------------ round trips ---

// fp32 export, then import: the parameters come back bit for bit.
void expect_fp32_round_trip(bool tied, bool llama3) {
  const std::string dir = scratch(std::string("rt_") + (tied ? "tied" : "untied") + (llama3 ? "_llama3" : ""));
  const ModelConfig c = small_config(tied, llama3);
  const CheckpointState orig = make_checkpoint(dir + "/ckpt", c, 1200);

  HfExportOptions opt;
  opt.dtype = HfDtype::F32;
  const HfExportResult r = export_checkpoint_to_hf(dir + "/ckpt/step_00001200", dir + "/hf", opt);
  EXPECT_EQ(r.step, 1200);
  EXPECT_FALSE(fs::exists(dir + "/hf.partial"));
  EXPECT_EQ(dir_files(dir + "/hf"),
            (std::set<std::string>{"config.json", "generation_config.json", "model.safetensors",
                                   "tokenizer.json", "tokenizer_config.json"}));
  EXPECT_EQ(read_text_file(dir + "/hf/tokenizer.json"), read_text_file(dir + "/ckpt_tokenizer_src/tokenizer.json"));

  // The weights file: HF names in HF order, F32, no lm_head when tied.
  const st::File f = st::File::open(dir + "/hf/model.safetensors");
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  const std::vector<HfTensor> map = hf_tensor_map(c, ParamLayout(c));
  ASSERT_EQ(f.tensors().size(), map.size());
  for (size_t i = 0; i < map.size(); ++i) {
    EXPECT_EQ(f.tensors()[i].name, map[i].name);
    EXPECT_EQ(f.tensors()[i].dtype, st::DType::F32);
    EXPECT_EQ(f.tensors()[i].shape, map[i].shape);
  }
  EXPECT_EQ(f.find("lm_head.weight") != nullptr, !tied);

  // Import and compare.
  const std::string step_dir = import_hf_to_checkpoint(dir + "/hf", dir + "/back", 0);
  EXPECT_EQ(step_dir, dir + "/back/step_00000000");
  const CheckpointState back = read_checkpoint(step_dir);
  EXPECT_TRUE(bitwise_equal(back.params, orig.params))
      << "first difference at flat index " << first_difference(back.params, orig.params);
  EXPECT_EQ(back.config["model"], c.to_json());
  EXPECT_EQ(back.step, 0);
  EXPECT_TRUE(back.exp_avg.empty());  // weights only
  EXPECT_EQ(back.tokenizer_files.size(), 2u);
  // And load_hf_model sees the same model a HF user would.
  const HfModel hf = load_hf_model(dir + "/hf");
  EXPECT_TRUE(bitwise_equal(hf.params, orig.params));
}

TEST(CkptConvertRoundTrip, Fp32Untied) { expect_fp32_round_trip(false, false); }
TEST(CkptConvertRoundTrip, Fp32Tied) { expect_fp32_round_trip(true, false); }
TEST(CkptConvertRoundTrip, Fp32UntiedLlama3Rope) { expect_fp32_round_trip(false, true); }
TEST(CkptConvertRoundTrip, Fp32TiedLlama3Rope) { expect_fp32_round_trip(true, true); }

// Independent of st::f32_to_bf16: add half an ulp of bf16 (minus one when the
// kept bit is even) and truncate, the textbook round-to-nearest-even.
uint16_t bf16_rne_reference(float x) {
  const uint32_t b = std::bit_cast<uint32_t>(x);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

TEST(CkptConvertBf16, ValuesAreRoundToNearestEvenOfFp32) {
  const std::string dir = scratch("bf16");
  const ModelConfig c = small_config(false, true);
  const CheckpointState orig = make_checkpoint(dir + "/ckpt", c, 5);
  HfExportOptions opt;  // bf16 is the default
  export_checkpoint_to_hf(dir + "/ckpt", dir + "/hf", opt);
  EXPECT_EQ(read_json(dir + "/hf/config.json")["torch_dtype"], "bfloat16");
  const st::File f = st::File::open(dir + "/hf/model.safetensors");
  size_t checked = 0;
  for (const HfTensor& t : hf_tensor_map(c, ParamLayout(c))) {
    const st::TensorInfo& info = f.get(t.name);
    ASSERT_EQ(info.dtype, st::DType::BF16) << t.name;
    const std::span<const uint8_t> raw = f.bytes(info);
    ASSERT_EQ(raw.size(), 2 * t.numel);
    for (size_t i = 0; i < t.numel; ++i) {
      uint16_t got;
      std::memcpy(&got, raw.data() + 2 * i, 2);
      const float x = orig.params[t.offset + i];
      ASSERT_EQ(got, bf16_rne_reference(x)) << t.name << "[" << i << "] = " << x;
      ++checked;
    }
  }
  EXPECT_EQ(checked, orig.params.size());
  // The ties in test_params went the even way.
  const st::TensorInfo& e = f.get("model.embed_tokens.weight");
  uint16_t v[3];
  std::memcpy(v, f.bytes(e).data() + 2, 6);
  EXPECT_EQ(v[0], 0x3f80);
  EXPECT_EQ(v[1], 0x3f82);
  EXPECT_EQ(v[2], 0xbf82);
  // Re-import gives exactly the bf16 values.
  const HfModel hf = load_hf_model(dir + "/hf");
  for (size_t i = 0; i < orig.params.size(); ++i)
    ASSERT_EQ(std::bit_cast<uint32_t>(hf.params[i]), uint32_t(bf16_rne_reference(orig.params[i])) << 16) << i;
}

TEST(CkptConvertShards, SmallShardSizeGivesIndexedShardsThatReimportIdentically) {
  const std::string dir = scratch("shards");
  const ModelConfig c = small_config(false, false);
  const CheckpointState orig = make_checkpoint(dir + "/ckpt", c, 40);
  const test::CommandResult r = test::run_command(kTool + " export --ckpt " + dir + "/ckpt --out " + dir + "/hf --dtype fp32 --shard-size 20KB");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("wrote model-00001-of-"), std::string::npos) << r.output;

  const json index = read_json(dir + "/hf/model.safetensors.index.json");
  const json& wm = index["weight_map"];
  const std::vector<HfTensor> map = hf_tensor_map(c, ParamLayout(c));
  ASSERT_EQ(wm.size(), map.size());
  std::map<std::string, std::vector<std::string>> by_file;  // file -> tensors, in index order
  uint64_t total = 0;
  for (const HfTensor& t : map) {
    ASSERT_TRUE(wm.contains(t.name)) << t.name;
    by_file[wm[t.name].get<std::string>()].push_back(t.name);
    total += 4 * t.numel;
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  ASSERT_GT(by_file.size(), 2u);
  EXPECT_FALSE(fs::exists(dir + "/hf/model.safetensors"));
  const size_t n = by_file.size();
  size_t i = 0;
  for (const auto& [file, names] : by_file) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", ++i, n);
    EXPECT_EQ(file, want);
    const st::File f = st::File::open(dir + "/hf/" + file);
    EXPECT_EQ(f.metadata().at("format"), "pt");
    ASSERT_EQ(f.tensors().size(), names.size()) << file;
    uint64_t bytes = 0;
    for (size_t k = 0; k < names.size(); ++k) {
      EXPECT_EQ(f.tensors()[k].name, names[k]);
      bytes += f.tensors()[k].nbytes();
    }
    if (names.size() > 1) {
      EXPECT_LE(bytes, 20'000u) << file;
    }
  }
  const test::CommandResult imp = test::run_command(kTool + " import --hf " + dir + "/hf --out " + dir + "/back --step 40");
  ASSERT_EQ(imp.status, 0) << imp.output;
  const CheckpointState back = read_checkpoint(dir + "/back/step_00000040");
  EXPECT_TRUE(bitwise_equal(back.params, orig.params));
  EXPECT_EQ(back.step, 40);
}

TEST(CkptConvertConfig, ConfigJsonHasTheFieldsTransformersReads) {
  const std::string dir = scratch("config");
  ModelConfig c = small_config(true, true);
  c.eos_id = -1;
  make_checkpoint(dir + "/ckpt", c, 3);
  HfExportOptions opt;
  opt.dtype = HfDtype::F32;
  export_checkpoint_to_hf(dir + "/ckpt", dir + "/hf", opt);
  const json j = read_json(dir + "/hf/config.json");
  EXPECT_EQ(j["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["hidden_size"], 32);
  EXPECT_EQ(j["intermediate_size"], 48);
  EXPECT_EQ(j["num_hidden_layers"], 2);
  EXPECT_EQ(j["num_attention_heads"], 4);
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["head_dim"], 8);
  EXPECT_EQ(j["rms_norm_eps"].get<double>(), 1e-5);
  EXPECT_EQ(j["rope_theta"].get<double>(), 500000.0);
  EXPECT_EQ(j["rope_scaling"], (json{{"rope_type", "llama3"},
                                     {"factor", 8.0},
                                     {"low_freq_factor", 1.0},
                                     {"high_freq_factor", 4.0},
                                     {"original_max_position_embeddings", 32}}));
  EXPECT_EQ(j["max_position_embeddings"], 64);
  EXPECT_EQ(j["vocab_size"], 96);
  EXPECT_EQ(j["tie_word_embeddings"], true);
  EXPECT_EQ(j["torch_dtype"], "float32");
  EXPECT_EQ(j["bos_token_id"], 1);
  EXPECT_TRUE(j.contains("eos_token_id") && j["eos_token_id"].is_null());
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_EQ(j["attention_bias"], false);
  EXPECT_EQ(j["mlp_bias"], false);
  EXPECT_EQ(j["initializer_range"].get<double>(), 0.013);
  const json g = read_json(dir + "/hf/generation_config.json");
  EXPECT_EQ(g["bos_token_id"], 1);
  EXPECT_FALSE(g.contains("eos_token_id"));
  EXPECT_EQ(g["do_sample"], false);
  // Our own HF reader gets the same model back.
  ModelConfig back = model_config_from_hf(j, "config.json");
  back.init_std = c.init_std;  // not a field model_config_from_hf reads
  EXPECT_EQ(back.to_json(), c.to_json());
  // No scaling: rope_scaling is null.
  EXPECT_TRUE(hf_config_json(small_config(false, false), HfDtype::BF16)["rope_scaling"].is_null());
}

// --------------------------------------------------------------- fixture ---

TEST(CkptConvertFixture, ImportExportReimportIsBitExactAndForwardMatches) {
  if (!path_exists(kFixture + "/golden.safetensors")) GTEST_SKIP() << "no fixture at " << kFixture;
  const std::string dir = scratch("fixture");
  test::CommandResult r = test::run_command(kTool + " import --hf " + kFixture + " --out " + dir + "/ckpt --step 7");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("step_00000007"), std::string::npos) << r.output;
  r = test::run_command(kTool + " export --ckpt " + dir + "/ckpt --out " + dir + "/hf --dtype fp32");
  ASSERT_EQ(r.status, 0) << r.output;
  // Every exported tensor equals the fixture's, bit for bit.
  const st::File orig = st::File::open(kFixture + "/model.safetensors");
  const st::File exp = st::File::open(dir + "/hf/model.safetensors");
  EXPECT_EQ(exp.tensors().size(), orig.tensors().size());
  for (const st::TensorInfo& t : orig.tensors()) {
    ASSERT_NE(exp.find(t.name), nullptr) << t.name;
    EXPECT_EQ(exp.get(t.name).shape, t.shape) << t.name;
    EXPECT_TRUE(bitwise_equal(exp.read_f32(t.name), orig.read_f32(t.name))) << t.name;
  }
  const ModelConfig fixture_cfg = load_hf_model(kFixture).config;
  EXPECT_EQ(load_hf_model(dir + "/hf").config.to_json(), fixture_cfg.to_json());
  r = test::run_command(kTool + " import --hf " + dir + "/hf --out " + dir + "/back");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(bitwise_equal(read_checkpoint(dir + "/back/step_00000000").params,
                            read_checkpoint(dir + "/ckpt/step_00000007").params));

  // The forward pass sees the same model: identical logits.
  for (const std::string& model : {kFixture, dir + "/hf"}) {
    const std::string out = dir + (model == kFixture ? "/logits_orig.safetensors" : "/logits_export.safetensors");
    r = test::run_command(kForward + " --model " + model + " --tokens " + kFixture + "/golden.safetensors --out " + out);
    ASSERT_EQ(r.status, 0) << r.output;
  }
  const std::vector<float> a = st::File::open(dir + "/logits_orig.safetensors").read_f32("logits");
  const std::vector<float> b = st::File::open(dir + "/logits_export.safetensors").read_f32("logits");
  EXPECT_TRUE(bitwise_equal(a, b)) << "rel error " << test::rel_error(b, a);
  // bf16 export: close to the fp32 logits (bf16 weights, fp32 compute).
  r = test::run_command(kTool + " export --ckpt " + dir + "/ckpt --out " + dir + "/hf_bf16");
  ASSERT_EQ(r.status, 0) << r.output;
  r = test::run_command(kForward + " --model " + dir + "/hf_bf16 --tokens " + kFixture + "/golden.safetensors --out " + dir +
          "/logits_bf16.safetensors");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::vector<float> c = st::File::open(dir + "/logits_bf16.safetensors").read_f32("logits");
  EXPECT_LT(test::rel_error(c, a), 2e-2);
}

// ------------------------------------------------------------- resolving ---

TEST(CkptConvertRoot, ExportsTheNewestValidCheckpointOfARoot) {
  const std::string dir = scratch("root");
  const ModelConfig c = small_config(false, false);
  const CheckpointState old = make_checkpoint(dir + "/ckpt", c, 100, 1);
  make_checkpoint(dir + "/ckpt", c, 200, 2);
  // Corrupt the newest: one flipped byte in its weights.
  {
    const std::string p = dir + "/ckpt/step_00000200/model.safetensors";
    std::vector<uint8_t> b = read_file(p);
    b[b.size() - 3] ^= 0x40;
    fs::permissions(p, fs::perms::owner_write, fs::perm_options::add);
    write_file_atomic(p, b.data(), b.size());
  }
  const test::CommandResult r = test::run_command(kTool + " export --ckpt " + dir + "/ckpt --out " + dir + "/hf --dtype fp32");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("skipping " + dir + "/ckpt/step_00000200"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step_00000100 (step 100)"), std::string::npos) << r.output;
  EXPECT_TRUE(bitwise_equal(load_hf_model(dir + "/hf").params, old.params));
}

// ------------------------------------------------------------ bad inputs ---

TEST(CkptConvertCli, BadInputsGiveClearErrorsAndExitCodes) {
  const std::string dir = scratch("cli");
  test::CommandResult r = test::run_command(kTool);
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("usage:"), std::string::npos) << r.output;
  r = test::run_command(kTool + " convert");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown command 'convert'"), std::string::npos) << r.output;
  r = test::run_command(kTool + " export --ckpt x --out y --bogus");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown argument '--bogus'"), std::string::npos) << r.output;
  r = test::run_command(kTool + " export --ckpt x");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("export needs --ckpt and --out"), std::string::npos) << r.output;
  r = test::run_command(kTool + " import --hf x --out y --step -3");
  EXPECT_EQ(r.status, 2);
  r = test::run_command(kTool + " export --ckpt x --out y --dtype fp16");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--dtype 'fp16'"), std::string::npos) << r.output;
  r = test::run_command(kTool + " --help");
  EXPECT_EQ(r.status, 0);

  // Missing checkpoint, a directory that is not one, a bad size.
  r = test::run_command(kTool + " export --ckpt " + dir + "/nope --out " + dir + "/hf");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("checkpoint '" + dir + "/nope' does not exist"), std::string::npos) << r.output;
  fs::create_directories(dir + "/plain");
  r = test::run_command(kTool + " export --ckpt " + dir + "/plain --out " + dir + "/hf");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("'" + dir + "/plain' is not a checkpoint"), std::string::npos) << r.output;
  r = test::run_command(kTool + " export --ckpt " + dir + "/plain --out " + dir + "/hf --shard-size 5XB");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--shard-size '5XB': unknown unit 'xb'"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/hf"));
  EXPECT_FALSE(fs::exists(dir + "/hf.partial"));

  // A root whose only checkpoint is incomplete.
  const ModelConfig c = small_config(false, false);
  make_checkpoint(dir + "/ckpt", c, 9);
  fs::remove(dir + "/ckpt/step_00000009/COMPLETE");
  r = test::run_command(kTool + " export --ckpt " + dir + "/ckpt --out " + dir + "/hf");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no valid checkpoint under '" + dir + "/ckpt'"), std::string::npos) << r.output;
  r = test::run_command(kTool + " export --ckpt " + dir + "/ckpt/step_00000009 --out " + dir + "/hf");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("incomplete checkpoint"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/hf.partial"));

  // Import: missing directory, not a HF directory, an existing step.
  r = test::run_command(kTool + " import --hf " + dir + "/nope --out " + dir + "/imp");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("'" + dir + "/nope' does not exist"), std::string::npos) << r.output;
  r = test::run_command(kTool + " import --hf " + dir + "/plain --out " + dir + "/imp");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no config.json"), std::string::npos) << r.output;
  if (path_exists(kFixture + "/config.json")) {
    ASSERT_EQ(test::run_command(kTool + " import --hf " + kFixture + " --out " + dir + "/imp").status, 0);
    r = test::run_command(kTool + " import --hf " + kFixture + " --out " + dir + "/imp");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.output.find("already exists"), std::string::npos) << r.output;
  }
}

TEST(CkptConvertCli, ExistingOutputIsRefusedUnlessForced) {
  const std::string dir = scratch("force");
  const ModelConfig c = small_config(true, false);
  const CheckpointState s = make_checkpoint(dir + "/ckpt", c, 1);
  fs::create_directories(dir + "/hf");
  write_file_atomic(dir + "/hf/old.txt", "old", 3);
  const std::string cmd = kTool + " export --ckpt " + dir + "/ckpt --out " + dir + "/hf --dtype fp32";
  test::CommandResult r = test::run_command(cmd);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("output '" + dir + "/hf' already exists and is not empty"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir + "/hf/old.txt"));

  // A leftover .partial from an export that died is cleared, and --force
  // replaces the whole directory.
  fs::create_directories(dir + "/hf.partial");
  write_file_atomic(dir + "/hf.partial/junk", "x", 1);
  r = test::run_command(cmd + " --force");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/hf/old.txt"));
  EXPECT_FALSE(fs::exists(dir + "/hf.partial"));
  EXPECT_TRUE(bitwise_equal(load_hf_model(dir + "/hf").params, s.params));

  // An empty directory is fine without --force.
  fs::create_directories(dir + "/empty");
  r = test::run_command(kTool + " export --ckpt " + dir + "/ckpt --out " + dir + "/empty");
  EXPECT_EQ(r.status, 0) << r.output;

  // Never into a directory that holds the checkpoint, even with --force.
  r = test::run_command(kTool + " export --ckpt " + dir + "/ckpt --out " + dir + " --force");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("contains the checkpoint"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir + "/ckpt/step_00000001/COMPLETE"));
}

}  // namespace
}  // namespace intellect
