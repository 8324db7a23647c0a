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

}  // namespace intellect
