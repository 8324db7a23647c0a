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

// What LlamaCuda relies on: each rank's local buffer, filled from the flat
// buffer through its pieces, all-gathers (rank-major, shard_len per rank)
// into a copy of the unit whose element j is flat[unit.begin + j]; and the
// reduce-scatter of per-rank unit gradients leaves each rank the sum over
// ranks of exactly the elements it owns.
TEST(ShardPlan, GatherAndReduceScatterOnTheCpuRebuildTheFlatBuffer) {
  for (int world : {1, 2, 3, 5}) {
    SCOPED_TRACE(::testing::Message() << "world " << world);
    const ParamLayout layout(model(false));
    const ShardPlan plan(layout, world, 16);
    const size_t P = layout.total();
    std::vector<float> flat(P);
    for (size_t i = 0; i < P; ++i) flat[i] = static_cast<float>(i) + 0.5f;

    std::vector<std::vector<float>> local(world, std::vector<float>(plan.local_elements(), -1.0f));
    for (int r = 0; r < world; ++r) {
      std::fill(local[r].begin(), local[r].end(), 0.0f);
      size_t prev_end = 0;
      for (const ShardPiece& pc : plan.pieces(r)) {
        EXPECT_GE(pc.local_begin, prev_end);  // in local order, disjoint
        prev_end = pc.local_begin + pc.len;
        ASSERT_LE(prev_end, plan.local_elements());
        for (size_t i = 0; i < pc.len; ++i) local[r][pc.local_begin + i] = flat[pc.flat_begin + i];
      }
    }
    for (size_t u = 0; u < plan.units().size(); ++u) {
      const size_t len = plan.shard_len(u), begin = plan.units()[u].range.begin;
      std::vector<float> gathered;
      for (int r = 0; r < world; ++r)
        gathered.insert(gathered.end(), local[r].begin() + plan.local_offset(u),
                        local[r].begin() + plan.local_offset(u) + len);
      for (size_t j = 0; j < plan.units()[u].range.size(); ++j) ASSERT_EQ(gathered[j], flat[begin + j]);
      for (size_t j = plan.units()[u].range.size(); j < gathered.size(); ++j) ASSERT_EQ(gathered[j], 0.0f);

      // Rank r's unit gradient is (r + 1) · flat; the reduce-scatter sum is
      // world(world+1)/2 · flat on the owner.
      std::vector<float> reduced(len * world, 0.0f);
      for (int r = 0; r < world; ++r)
        for (size_t j = 0; j < plan.units()[u].range.size(); ++j) reduced[j] += (r + 1) * flat[begin + j];
      for (int r = 0; r < world; ++r) {
        const FlatRange own = plan.shard(u, r);
        for (size_t i = own.begin; i < own.end; ++i)
          ASSERT_EQ(reduced[r * len + (i - own.begin)], world * (world + 1) / 2.0f * flat[i]);
      }
    }
  }
}

TEST(ShardPlan, LocalDecayRangesCarryEachTensorsFlagAndNoneOnPadding) {
  for (bool decay_all : {false, true})
    for (int world : {1, 2, 3, 4}) {
      SCOPED_TRACE(::testing::Message() << "world " << world << " decay_all " << decay_all);
      const ParamLayout layout(model(false));
      std::vector<uint8_t> flat_flag(layout.total());
      for (const ParamEntry& e : layout.entries())
        for (size_t i = 0; i < e.numel; ++i)
          flat_flag[e.offset + i] = decay_all || (!e.is_norm && e.name != "embed");
      const ShardPlan plan(layout, world, 64);
      for (int r = 0; r < world; ++r) {
        std::vector<int64_t> bounds;
        std::vector<uint8_t> flags;
        const size_t n = plan.local_elements();
        local_decay_ranges(layout, plan.pieces(r), n, decay_all, bounds, flags);
        ASSERT_EQ(bounds.size(), flags.size() + 1);
        ASSERT_EQ(bounds.front(), 0);
        ASSERT_EQ(bounds.back(), static_cast<int64_t>(n));
        std::vector<int> local_flag(n, -1);
        for (size_t k = 0; k < flags.size(); ++k) {
          ASSERT_LT(bounds[k], bounds[k + 1]);
          if (k > 0) {
            EXPECT_NE(flags[k], flags[k - 1]) << "adjacent ranges with one flag are merged";
          }
          for (int64_t i = bounds[k]; i < bounds[k + 1]; ++i) local_flag[i] = flags[k];
        }
        std::vector<bool> owned(n, false);
        for (const ShardPiece& pc : plan.pieces(r))
          for (size_t i = 0; i < pc.len; ++i) {
            owned[pc.local_begin + i] = true;
            ASSERT_EQ(local_flag[pc.local_begin + i], flat_flag[pc.flat_begin + i]) << "flat " << pc.flat_begin + i;
          }
        for (size_t i = 0; i < n; ++i)
          if (!owned[i]) {
            ASSERT_EQ(local_flag[i], 0) << "padding at local " << i;
          }
      }
    }
  // Unsharded: the single piece reproduces the flags of the whole buffer.
  const ParamLayout layout(model(false));
  std::vector<int64_t> bounds;
  std::vector<uint8_t> flags;
  local_decay_ranges(layout, {ShardPiece{0, 0, layout.total()}}, layout.total(), false, bounds, flags);
  EXPECT_EQ(flags.front(), 0);  // the embedding and the first block's norm gain, merged
  EXPECT_EQ(static_cast<size_t>(bounds[1]),
            layout.get("embed").numel + layout.get("layers.0.attn_norm").numel);
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
