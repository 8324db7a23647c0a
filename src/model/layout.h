// ParamLayout: the table that maps every parameter tensor to a range of one
// flat fp32 buffer. The optimizer, checkpoints, hashing, the pseudo-gradient,
// the all-reduce and sharding all work on flat ranges of that buffer.
//
// Order: embed, then each block's tensors contiguously (a block is one flat
// unit for FSDP), then final_norm and lm_head (absent when tied). Q/K/V are one
// fused [q_dim + 2*kv_dim, dim] matrix and gate/up one [2*ffn, dim] matrix, so
// each is a single GEMM; HF names map onto row ranges of them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace intellect {

struct ParamEntry {
  std::string name;            // internal name, e.g. "layers.3.wqkv"
  std::vector<int64_t> shape;  // row-major; matrices are [out, in]
  size_t offset = 0;           // in elements, into the flat buffer
  size_t numel = 0;
  int layer = -1;              // block index, -1 outside the blocks
  bool is_norm = false;        // 1-D gain vectors
};

struct BlockOffsets {
  size_t attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down;
  size_t begin, end;  // the block's flat range
};

class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& cfg);

  const std::vector<ParamEntry>& entries() const { return entries_; }
  size_t total() const { return total_; }
  const ParamEntry& get(const std::string& name) const;  // fail() if absent
  const ParamEntry* find(const std::string& name) const;

  size_t embed() const { return embed_; }
  size_t final_norm() const { return final_norm_; }
  size_t lm_head() const { return lm_head_; }  // == embed() when tied
  const BlockOffsets& block(int layer) const { return blocks_[layer]; }

 private:
  size_t add(std::string name, std::vector<int64_t> shape, int layer, bool is_norm);
  std::vector<ParamEntry> entries_;
  std::vector<BlockOffsets> blocks_;
  size_t total_ = 0, embed_ = 0, final_norm_ = 0, lm_head_ = 0;
};

// Flat units and the pieces of the flat buffer a replica keeps: the terms in
// which the model asks for its weights (model/unit_weights.h), FSDP shards
// them (dist/shard_plan.h), and the optimizer's decay ranges are cut.
struct FlatRange {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};

struct FlatUnit {
  std::string name;  // "embed", "layers.<i>", "head"
  FlatRange range;
};

// The units of a layout, in flat order, covering [0, total) without gaps.
std::vector<FlatUnit> flat_units(const ParamLayout& layout);

// Where a rank keeps part of the flat buffer: local[local_begin, +len) of its
// shard buffer holds flat[flat_begin, +len).
struct ShardPiece {
  size_t local_begin = 0, flat_begin = 0, len = 0;
};

// Weight-decay ranges over a rank's local buffer, for the fused AdamW:
// bounds (n+1 increasing offsets from 0 to local_n) and one flag per range.
// Owned pieces take their tensors' flags (matrices decay; norm gains and the
// embedding only with decay_all), padding none. Unsharded, pass the single
// piece {0, 0, total}.
void local_decay_ranges(const ParamLayout& layout, const std::vector<ShardPiece>& pieces, size_t local_n,
                        bool decay_all, std::vector<int64_t>& bounds, std::vector<uint8_t>& flags);

}  // namespace intellect
