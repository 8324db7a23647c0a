// The recompute planner (model/memory_plan.h) and train.recompute parsing:
// pure host arithmetic, so it is checked here, without a GPU.
#include <gtest/gtest.h>

#include "model/memory_plan.h"
#include "train/config.h"
#include "train/memory_estimate.h"
#include "util/error.h"

namespace intellect {
namespace {

ModelConfig ten_b() {
  ModelConfig m;
  m.vocab_size = 128256;
  m.dim = 4096;
  m.n_layers = 42;
  m.n_heads = 32;
  m.n_kv_heads = 8;
  m.head_dim = 128;
  m.ffn_dim = 14336;
  m.max_seq_len = 8192;
  return m;
}

TEST(MemoryPlan, BlockBytesAtTheTenBShapes) {
  const BlockBytes b = block_activation_bytes(ten_b(), 1, 8192);
  const size_t N = 8192;
  // kept: qkv 6144 + attention 4096 + mid residual 4096 + gate|up 28672 columns of bf16, plus stats
  const size_t kept = N * 2 * (6144 + 4096 + 4096 + 28672) + N * 4 * 2 + 32 * N * 4;
  EXPECT_EQ(b.ops, kept);
  EXPECT_EQ(b.none, kept + N * 2 * (2 * 4096 + 14336));
  EXPECT_EQ(b.shared_ops, N * 2 * (4096 + 14336));
  EXPECT_EQ(b.shared_full, kept);
  // Op-level recomputation keeps about two thirds of a block's bytes.
  EXPECT_NEAR(double(b.ops) / double(b.none), 0.66, 0.01);
}

TEST(MemoryPlan, ChoosesTheLeastRecomputationThatFits) {
  const BlockBytes b{100, 60, 45, 60};
  const int64_t L = 10;
  bool fits = false;
  MemoryPlan p = plan_recompute(b, L, 1000, &fits);
  EXPECT_TRUE(fits);
  EXPECT_EQ(p.count(Recompute::none), 10);
  EXPECT_EQ(p.activation_bytes, 1000u);

  // One byte short: op level for as few blocks as needed, the shared 45
  // bytes included: 8*100 + 2*60 + 45 = 965 (one would be 1005).
  p = plan_recompute(b, L, 999, &fits);
  EXPECT_TRUE(fits);
  EXPECT_EQ(p.count(Recompute::full), 0);
  EXPECT_EQ(p.count(Recompute::ops), 2);
  EXPECT_EQ(p.activation_bytes, 965u);
  // Recomputed blocks come first.
  EXPECT_EQ(p.blocks[0], Recompute::ops);
  EXPECT_EQ(p.blocks[1], Recompute::ops);
  EXPECT_EQ(p.blocks[2], Recompute::none);

  // Every block at op level: 10*60 + 45.
  p = plan_recompute(b, L, 645, &fits);
  EXPECT_EQ(p.count(Recompute::ops), 10);
  EXPECT_EQ(p.activation_bytes, 645u);

  // Below that, full recomputation for the fewest blocks, then the fewest at
  // op level: one full block costs its shared 60 and saves only 60, so two;
  // (8-k)*100 + 60k + 45 + 60 <= 644 gives k = 7.
  p = plan_recompute(b, L, 644, &fits);
  EXPECT_TRUE(fits);
  EXPECT_EQ(p.count(Recompute::full), 2);
  EXPECT_EQ(p.count(Recompute::ops), 7);
  EXPECT_EQ(p.count(Recompute::none), 1);
  EXPECT_EQ(p.activation_bytes, 625u);

  // Nothing fits: every block recomputed fully, and said so.
  p = plan_recompute(b, L, 0, &fits);
  EXPECT_FALSE(fits);
  EXPECT_EQ(p.count(Recompute::full), 10);
  EXPECT_EQ(p.activation_bytes, 105u);
  EXPECT_NE(p.describe().find("10 recompute fully"), std::string::npos) << p.describe();
}

TEST(MemoryPlan, FixedPlanCountsSharedBuffersOnce) {
  const BlockBytes b{100, 60, 45, 60};
  EXPECT_EQ(fixed_plan(b, {Recompute::none, Recompute::none}).activation_bytes, 200u);
  EXPECT_EQ(fixed_plan(b, {Recompute::ops, Recompute::ops}).activation_bytes, 165u);
  EXPECT_EQ(fixed_plan(b, {Recompute::full, Recompute::full}).activation_bytes, 105u);
  EXPECT_EQ(fixed_plan(b, {Recompute::full, Recompute::ops}).activation_bytes, 165u);
}

Config with_recompute(const std::string& value) {
  return load_config("", {"model.n_layers=4", "train.recompute=" + value});
}

TEST(MemoryPlan, RecomputeConfig) {
  EXPECT_TRUE(load_config("", {}).train.recompute.automatic);
  EXPECT_TRUE(with_recompute("auto").train.recompute.automatic);
  for (auto [value, level] : std::vector<std::pair<std::string, Recompute>>{
           {"none", Recompute::none}, {"ops", Recompute::ops}, {"all", Recompute::full}}) {
    const RecomputeSpec r = with_recompute(value).train.recompute;
    EXPECT_FALSE(r.automatic);
    EXPECT_EQ(r.blocks, std::vector<Recompute>(4, level)) << value;
  }
  const RecomputeSpec list = with_recompute("[0, 2]").train.recompute;
  EXPECT_EQ(list.blocks, (std::vector<Recompute>{Recompute::full, Recompute::none, Recompute::full, Recompute::none}));
  for (const char* bad : {"[4]", "\"some\"", "{}", "[-1]"}) {
    try {
      with_recompute(bad);
      ADD_FAILURE() << "accepted train.recompute=" << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("recompute"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(load_config("", {}).precision.grad_dtype, "auto");
  EXPECT_THROW(load_config("", {"precision.grad_dtype=fp16"}), Error);
}


// The estimate without a GPU against what LlamaCuda allocated on an H200
// (bench_step, the 10B at one micro-batch of 8192 tokens, bf16 gradients and
// AdamW state, no master weights; docs/device-logs/2026-12-02-bench10b-v4-final.log):
// "122.6 GiB allocated", activations 42.0436 GiB, nothing recomputed.
Config ten_b_config(const std::vector<std::string>& extra) {
  std::vector<std::string> o = {"train.batch_size=1", "train.micro_batch_size=1", "precision.master_weights=false",
                                "precision.optim_state_dtype=bf16"};
  o.insert(o.end(), extra.begin(), extra.end());
  return load_config(std::string(INTELLECT_SOURCE_DIR) + "/configs/10b.json", o);
}

TEST(MemoryEstimate, MatchesWhatTheH200AllocatedForTheTenB) {
  const Config c = ten_b_config({"train.memory_limit_gib=139.8"});
  const MemoryEstimate e = estimate_gpu_memory(c, 1);
  const double gib = double(size_t(1) << 30);
  ASSERT_TRUE(e.fits) << e.describe();
  EXPECT_EQ(e.plan.count(Recompute::none), 42) << e.describe();
  EXPECT_NEAR(e.plan.activation_bytes / gib, 42.0436, 0.001);
  // Everything LlamaCuda allocates (the reserve is left free, not allocated).
  EXPECT_NEAR((e.total() - e.reserve) / gib, 122.6, 0.6) << e.describe();
  EXPECT_EQ(e.gradients, e.weights);  // bf16 gradients: one micro-batch on one GPU
}

// FP8 linear layers add their scratch (one FP8 copy of the largest linear
// input, output gradient and weight, the weight twice) to the step's buffers.
TEST(MemoryEstimate, Fp8LinearLayersAddTheirScratch) {
  const Config b16 = ten_b_config({"train.memory_limit_gib=139.8"});
  const Config f8 = ten_b_config({"train.memory_limit_gib=139.8", "precision.matmul=fp8"});
  const size_t scratch = fp8_scratch_bytes(f8.model, 8192, false);
  // 8192 x 14336 (SwiGLU's output) + 8192 x 28672 (gate|up's gradient) + 2 x 28672 x 4096 (gate|up's weight)
  EXPECT_EQ(scratch, size_t(8192) * 14336 + size_t(8192) * 28672 + 2 * size_t(28672) * 4096 +
                         size_t(kFp8FixedSlots + kFp8SlotsPerBlock * 42) * kFp8SlotBytes);
  EXPECT_EQ(estimate_gpu_memory(f8, 1).step_buffers - estimate_gpu_memory(b16, 1).step_buffers, scratch);
  EXPECT_TRUE(estimate_gpu_memory(f8, 1).fits);
}

// An FP8 classifier casts the head's weight whole (twice: as is and
// transposed) and a chunk's logit gradient, so those set the buffers' sizes.
TEST(MemoryEstimate, Fp8ClassifierAddsTheHeadsOperands) {
  const Config f8 = ten_b_config({"train.memory_limit_gib=139.8", "precision.matmul=fp8"});
  const Config head = ten_b_config({"train.memory_limit_gib=139.8", "precision.matmul=fp8",
                                    "precision.fp8_classifier=true"});
  const size_t rows = static_cast<size_t>(classifier_chunk_rows(8192, 128256));
  EXPECT_EQ(rows, 2048u);
  EXPECT_EQ(fp8_scratch_bytes(head.model, 8192, true),
            size_t(8192) * 14336 + rows * 128256 + 2 * size_t(128256) * 4096 +
                size_t(kFp8FixedSlots + kFp8SlotsPerBlock * 42 + kFp8ClassifierSlots) * kFp8SlotBytes);
  EXPECT_EQ(estimate_gpu_memory(head, 1).step_buffers - estimate_gpu_memory(f8, 1).step_buffers,
            fp8_scratch_bytes(head.model, 8192, true) - fp8_scratch_bytes(f8.model, 8192, false));
  EXPECT_TRUE(estimate_gpu_memory(head, 1).fits) << estimate_gpu_memory(head, 1).describe();
}

TEST(MemoryEstimate, TheTenBOnEightyGigabyteGpus) {
  // One 80 GB H100: weights, bf16 gradients and bf16 moments alone are 76 GiB of 74.5.
  const MemoryEstimate one = estimate_gpu_memory(ten_b_config({"train.memory_limit_gib=74.5"}), 1);
  EXPECT_FALSE(one.fits) << one.describe();
  // FSDP: fp32 gradient shards; more GPUs leave more for activations.
  int64_t kept_before = -1;
  for (int gpus : {2, 4, 8}) {
    const MemoryEstimate e = estimate_gpu_memory(ten_b_config({"train.memory_limit_gib=74.5"}), gpus);
    EXPECT_TRUE(e.fits) << gpus << " GPUs:\n" << e.describe();
    EXPECT_LE(e.total(), size_t(74.5 * double(size_t(1) << 30))) << e.describe();
    EXPECT_EQ(e.gradients, 2 * e.weights);
    EXPECT_GT(e.gather_buffers, 0u);
    EXPECT_GE(e.plan.count(Recompute::none), kept_before);
    kept_before = e.plan.count(Recompute::none);
  }
  EXPECT_EQ(kept_before, 42);  // eight GPUs keep every activation
}

TEST(MemoryEstimate, NeedsTheGpuSize) {
  EXPECT_THROW(estimate_gpu_memory(ten_b_config({}), 1), Error);
  EXPECT_THROW(estimate_gpu_memory(ten_b_config({"train.memory_limit_gib=80"}), 0), Error);
}

}  // namespace
}  // namespace intellect
