// Config loading: presets parse, every field is validated with the file and
// field named, unknown keys are refused, --set overrides apply.
#include "train/config.h"
#include "train/schedule.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {


#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

const std::string kConfigs = std::string(INTELLECT_SOURCE_DIR) + "/configs/";

TEST(Config, PresetsParse) {
  for (const char* name : {"tiny.json", "tiny-shakespeare.json", "150m.json", "1b.json", "10b.json"}) {
    SCOPED_TRACE(name);
    Config c = load_config(kConfigs + name, {});
    EXPECT_GT(c.model.num_params(), 0);
  }
}

TEST(Config, TenBillionPresetIsIntellect1) {
  Config c = load_config(kConfigs + "10b.json", {});
  EXPECT_EQ(c.model.n_layers, 42);
  EXPECT_EQ(c.model.dim, 4096);
  EXPECT_EQ(c.model.ffn_dim, 14336);
  EXPECT_EQ(c.model.n_heads, 32);
  EXPECT_EQ(c.model.n_kv_heads, 8);
  EXPECT_EQ(c.model.head_dim, 128);
  EXPECT_EQ(c.model.vocab_size, 128256);
  EXPECT_EQ(c.model.max_seq_len, 8192);
  EXPECT_DOUBLE_EQ(c.model.rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.model.norm_eps, 1e-5);
  EXPECT_FALSE(c.model.tie_embeddings);
  EXPECT_EQ(c.train.batch_size, 128);
  EXPECT_EQ(c.train.seq_len, 8192);
  EXPECT_DOUBLE_EQ(c.optim.lr, 7.5e-5);
  EXPECT_DOUBLE_EQ(c.optim.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optim.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(c.optim.grad_clip, 1.0);
  EXPECT_EQ(c.optim.schedule.type, "wsd-sqrt");
  EXPECT_EQ(c.optim.schedule.warmup_steps, 1000);
  EXPECT_DOUBLE_EQ(c.train.z_loss_weight, 2e-4);
  EXPECT_EQ(c.diloco.inner_steps, 100);
  EXPECT_DOUBLE_EQ(c.diloco.outer_lr, 0.7);
  EXPECT_DOUBLE_EQ(c.diloco.outer_momentum, 0.9);
  EXPECT_TRUE(c.diloco.nesterov);
  EXPECT_EQ(c.diloco.compression, "int8");
  // ~10.2B parameters, as INTELLECT-1.
  EXPECT_NEAR(static_cast<double>(c.model.num_params()), 10.2e9, 0.2e9);
}

TEST(Config, EmbeddedDefaultIsTiny) {
  Config c = load_config("", {});
  EXPECT_EQ(c.model.dim, load_config(kConfigs + "tiny.json", {}).model.dim);
  EXPECT_CONTAINS(c.source, "embedded");
}

TEST(Config, OverridesApply) {
  Config c = load_config("", {"train.steps=7", "optim.lr=1e-3", "data.train=some/dir",
                              "model.rope_scaling={\"type\":\"llama3\",\"factor\":8}"});
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_DOUBLE_EQ(c.optim.lr, 1e-3);
  EXPECT_EQ(c.data.train.at(0).path, "some/dir");
  EXPECT_EQ(c.model.rope_scaling.type, "llama3");
  EXPECT_EQ(c.json["train"]["steps"], 7);
}

// Document masking follows the data: on when documents can be found (a BOS id).
TEST(Config, DocumentMaskingDefaultsToOnWithABosId) {
  EXPECT_TRUE(load_config("", {}).train.doc_masking);  // tiny.json has bos_id 256
  EXPECT_FALSE(load_config("", {"train.doc_masking=false"}).train.doc_masking);
  EXPECT_FALSE(load_config("", {"model.bos_id=-1"}).train.doc_masking);
  EXPECT_TRUE(load_config(kConfigs + "10b.json", {}).train.doc_masking);
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"model.bos_id=-1", "train.doc_masking=true"}); }),
                  "train.doc_masking: is true but model.bos_id is -1");
}

TEST(Config, ErrorsNameFileAndField) {
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"model.dim=-3"}); }), "model.dim: must be in [1");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"model.dim=\"wide\""}); }),
                  "model.dim: expected an integer, got \"wide\"");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"model.dimm=3"}); }), "model.dimm: unknown key");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"trian.steps=3"}); }), "trian: unknown key");
  // Unsealed frames are bench_allreduce --plaintext's alone: no config reaches them.
  for (const char* k : {"mesh.unsealed_frames_for_benchmarks=true", "mesh.plaintext=true"})
    EXPECT_CONTAINS(test::error_of([k] { load_config("", {k}); }), "unknown key");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"train.device=tpu"}); }),
                  "train.device: must be one of \"cpu\", \"cuda\"");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"train.micro_batch_size=5"}); }),
                  "train.micro_batch_size: must divide");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"model.n_kv_heads=3"}); }), "model.n_kv_heads: must divide");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"optim.schedule.type=wsd-sqrt"}); }),
                  "optim.schedule.decay_steps: is required");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"optim.beta1=1.5"}); }), "optim.beta1");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"train.seq_len=100000"}); }), "train.seq_len");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"nokey"}); }), "expected dotted.key=value");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"train.gpus=2"}); }),
                  "train.gpus: sharding over several GPUs needs train.device \"cuda\"");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"precision.grad_reduce_dtype=fp16"}); }),
                  "precision.grad_reduce_dtype: must be one of \"fp32\", \"bf16\"");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"precision.matmul=fp8"}); }),
                  "precision.matmul: \"fp8\" runs on the CUDA backend");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"precision.matmul=int8"}); }),
                  "precision.matmul: must be one of \"bf16\", \"fp8\"");
  EXPECT_EQ(load_config("", {"train.device=cuda", "precision.matmul=fp8"}).precision.matmul, "fp8");
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"train.device=cuda", "precision.fp8_weight_gradients=true"}); }),
                  "precision.fp8_weight_gradients: is true but matmul is \"bf16\"");
  EXPECT_TRUE(load_config("", {"train.device=cuda", "precision.matmul=fp8", "precision.fp8_weight_gradients=true"})
                  .precision.fp8_weight_gradients);
  EXPECT_CONTAINS(test::error_of([] { load_config("", {"train.device=cuda", "precision.fp8_classifier=true"}); }),
                  "precision.fp8_classifier: is true but matmul is \"bf16\"");
  EXPECT_CONTAINS(test::error_of([] {
                    load_config("", {"train.device=cuda", "precision.matmul=fp8", "precision.fp8_classifier=true",
                                     "model.vocab_size=258"});
                  }),
                  "precision.fp8_classifier: is true but model.vocab_size is 258, not a multiple of 16");
  EXPECT_TRUE(load_config("", {"train.device=cuda", "precision.matmul=fp8", "precision.fp8_classifier=true",
                               "model.vocab_size=272"})
                  .precision.fp8_classifier);
  const std::string path = ::testing::TempDir() + "/broken.json";
  write_file_atomic(path, "{ \"model\": ", 11);
  EXPECT_CONTAINS(test::error_of([&] { load_config(path, {}); }), path + ": not valid JSON");
  const std::string path2 = ::testing::TempDir() + "/missing.json";
  const std::string text = R"({"model": {"vocab_size": 10, "dim": 8, "n_layers": 1, "n_heads": 2,
    "ffn_dim": 16, "max_seq_len": 8}, "train": {"steps": 1, "batch_size": 1}, "optim": {},
    "data": {"train": "x"}})";
  write_file_atomic(path2, text.data(), text.size());
  EXPECT_CONTAINS(test::error_of([&] { load_config(path2, {}); }), path2 + ": optim.lr: is required");
  EXPECT_CONTAINS(test::error_of([] { load_config("/nonexistent/x.json", {}); }), "/nonexistent/x.json");
}

TEST(Schedule, WarmupCosineAndWsdSqrt) {
  OptimConfig o;
  o.lr = 1.0;
  o.schedule.type = "cosine";
  o.schedule.warmup_steps = 10;
  o.schedule.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(lr_at(o, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(o, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(o, 10, 110), 1.0);
  EXPECT_NEAR(lr_at(o, 60, 110), 0.55, 1e-12);
  EXPECT_NEAR(lr_at(o, 110, 110), 0.1, 1e-12);
  o.schedule.type = "wsd-sqrt";
  o.schedule.decay_steps = 100;
  o.schedule.min_lr_ratio = 0.0;
  // stable until 1000 − 100 = 900, then 1 − sqrt((s − 900)/100)
  EXPECT_DOUBLE_EQ(lr_at(o, 500, 1000), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(o, 900, 1000), 1.0);
  EXPECT_NEAR(lr_at(o, 925, 1000), 1.0 - std::sqrt(0.25), 1e-12);
  EXPECT_NEAR(lr_at(o, 999, 1000), 1.0 - std::sqrt(0.99), 1e-12);
  o.schedule.type = "wsd-linear";
  EXPECT_NEAR(lr_at(o, 925, 1000), 0.75, 1e-12);
  o.schedule.type = "constant";
  EXPECT_DOUBLE_EQ(lr_at(o, 925, 1000), 1.0);
}

TEST(Config, EmulatedSlowLinksAreCheckedAtLoad) {
  const Config c = load_config("", {"mesh.emulate_link_slow=node-0<>node-2", "mesh.emulate_link_slow_mbit=20"});
  EXPECT_EQ(c.mesh.emulate_link_slow, "node-0<>node-2");
  EXPECT_EQ(c.mesh.emulate_link_slow_mbit, 20.0);
  EXPECT_TRUE(c.mesh.order_rings_by_rate);
  EXPECT_FALSE(load_config("", {"mesh.order_rings_by_rate=false"}).mesh.order_rings_by_rate);
  EXPECT_NE(test::error_of([] { load_config("", {"mesh.emulate_link_slow=node-0<>node-2"}); })
                .find("emulate_link_slow_mbit"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { load_config("", {"mesh.emulate_link_slow=node-0", "mesh.emulate_link_slow_mbit=5"}); })
                .find("FROM>TO or A<>B"),
            std::string::npos);
}

}  // namespace
}  // namespace intellect
