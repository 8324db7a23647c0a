// The FSDP shard plan and the ring segments, on the CPU: every parameter is
// owned by exactly one GPU, shards are aligned and equal per unit, and the
// segments tile the flat buffer whatever the GPU count.
#include "dist/shard_plan.h"
#include "test_util.h"
#include "train/config.h"
#include "util/error.h"

namespace intellect {
namespace {

ModelConfig model(bool tied) {
  ModelConfig c;
  c.vocab_size = 1003;  // odd sizes, so units do not divide evenly
  c.dim = 72;
  c.n_layers = 3;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.head_dim = 12;
  c.ffn_dim = 190;
  c.max_seq_len = 16;
  c.tie_embeddings = tied;
  return c;
}

TEST(ShardPlan, UnitsAreEmbedBlocksHead) {
  const ParamLayout layout(model(false));
  const auto units = flat_units(layout);
  ASSERT_EQ(units.size(), 5u);
  EXPECT_EQ(units[0].name, "embed");
  EXPECT_EQ(units[1].name, "layers.0");
  EXPECT_EQ(units[3].name, "layers.2");
  EXPECT_EQ(units[4].name, "head");
  EXPECT_EQ(units[1].range.begin, layout.block(0).begin);
  EXPECT_EQ(units[4].range.end, layout.total());
  // tied: the head is only the final norm
  const ParamLayout tied(model(true));
  EXPECT_EQ(flat_units(tied).back().range.size(), 72u);
}

TEST(ShardPlan, EveryParameterHasExactlyOneOwner) {
  for (bool tied : {false, true})
    for (int world : {1, 2, 3, 4, 8}) {
      SCOPED_TRACE(::testing::Message() << "world " << world << " tied " << tied);
      const ParamLayout layout(model(tied));
      const ShardPlan plan(layout, world, 64);
      std::vector<int> owners(layout.total(), 0);
      size_t owned = 0;
      for (int r = 0; r < world; ++r) {
        for (size_t u = 0; u < plan.units().size(); ++u) {
          const FlatRange s = plan.shard(u, r);
          EXPECT_LE(s.size(), plan.shard_len(u));
          EXPECT_EQ(plan.shard_len(u) % 64, 0u);
          for (size_t i = s.begin; i < s.end; ++i) ++owners[i];
        }
        owned += plan.owned_elements(r);
      }
      for (size_t i = 0; i < owners.size(); ++i) ASSERT_EQ(owners[i], 1) << "element " << i;
      EXPECT_EQ(owned, layout.total());
      // Padded units hold the whole unit; local offsets are prefix sums.
      size_t off = 0;
      for (size_t u = 0; u < plan.units().size(); ++u) {
        EXPECT_GE(plan.shard_len(u) * world, plan.units()[u].range.size());
        EXPECT_EQ(plan.local_offset(u), off);
        off += plan.shard_len(u);
        EXPECT_LE(plan.shard_len(u) * world, plan.max_unit_padded());
      }
      EXPECT_EQ(plan.local_elements(), off);
    }
}

TEST(ShardPlan, TenBillionOnEightGpus) {
  const Config c = load_config(std::string(INTELLECT_SOURCE_DIR) + "/configs/10b.json", {});
  const ParamLayout layout(c.model);
  const ShardPlan plan(layout, 8);
  EXPECT_EQ(plan.units().size(), 44u);  // embed, 42 blocks, head
  // Each GPU holds an eighth of the model, within the padding.
  for (int r = 0; r < 8; ++r)
    EXPECT_NEAR(static_cast<double>(plan.owned_elements(r)), layout.total() / 8.0, 64.0 * 44);
}

TEST(ShardPlan, RingSegmentsTileTheBufferForAnyGpuCount) {
  for (size_t total : {size_t(0), size_t(1), size_t(7), size_t(1000003)})
    for (int k : {1, 2, 3, 8}) {
      const auto segs = ring_segments(total, k);
      ASSERT_EQ(segs.size(), static_cast<size_t>(k));
      size_t at = 0, lo = SIZE_MAX, hi = 0;
      for (const FlatRange& s : segs) {
        EXPECT_EQ(s.begin, at);
        at = s.end;
        lo = std::min(lo, s.size());
        hi = std::max(hi, s.size());
      }
      EXPECT_EQ(at, total);
      EXPECT_LE(hi - lo, 1u);
    }
  EXPECT_THROW(ring_segments(10, 0), Error);
  EXPECT_THROW(ShardPlan(ParamLayout(model(false)), 0), Error);
}

}  // namespace
}  // namespace intellect
