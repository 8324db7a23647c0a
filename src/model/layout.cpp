#include "model/layout.h"

#include <algorithm>

#include "util/error.h"

namespace intellect {

size_t ParamLayout::add(std::string name, std::vector<int64_t> shape, int layer, bool is_norm) {
  ParamEntry e;
  e.name = std::move(name);
  e.shape = std::move(shape);
  e.numel = 1;
  for (auto d : e.shape) e.numel *= static_cast<size_t>(d);
  e.offset = total_;
  e.layer = layer;
  e.is_norm = is_norm;
  total_ += e.numel;
  entries_.push_back(std::move(e));
  return entries_.back().offset;
}

ParamLayout::ParamLayout(const ModelConfig& c) {
  embed_ = add("embed", {c.vocab_size, c.dim}, -1, false);
  for (int l = 0; l < c.n_layers; ++l) {
    std::string p = "layers." + std::to_string(l) + ".";
    BlockOffsets b;
    b.begin = total_;
    b.attn_norm = add(p + "attn_norm", {c.dim}, l, true);
    b.wqkv = add(p + "wqkv", {c.qkv_dim(), c.dim}, l, false);
    b.wo = add(p + "wo", {c.dim, c.q_dim()}, l, false);
    b.mlp_norm = add(p + "mlp_norm", {c.dim}, l, true);
    b.w_gate_up = add(p + "w_gate_up", {2 * c.ffn_dim, c.dim}, l, false);
    b.w_down = add(p + "w_down", {c.dim, c.ffn_dim}, l, false);
    b.end = total_;
    blocks_.push_back(b);
  }
  final_norm_ = add("final_norm", {c.dim}, -1, true);
  lm_head_ = c.tie_embeddings ? embed_ : add("lm_head", {c.vocab_size, c.dim}, -1, false);
}

const ParamEntry* ParamLayout::find(const std::string& name) const {
  for (auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

const ParamEntry& ParamLayout::get(const std::string& name) const {
  const ParamEntry* e = find(name);
  if (!e) fail("model has no parameter '", name, "'");
  return *e;
}

std::vector<FlatUnit> flat_units(const ParamLayout& layout) {
  std::vector<FlatUnit> units;
  const ParamEntry& embed = layout.get("embed");
  units.push_back({"embed", {embed.offset, embed.offset + embed.numel}});
  size_t l = 0;
  for (const ParamEntry& e : layout.entries())
    if (e.layer >= 0 && static_cast<size_t>(e.layer) + 1 > l) l = static_cast<size_t>(e.layer) + 1;
  for (size_t i = 0; i < l; ++i) {
    const BlockOffsets& b = layout.block(static_cast<int>(i));
    units.push_back({"layers." + std::to_string(i), {b.begin, b.end}});
  }
  const size_t head_begin = layout.final_norm();
  units.push_back({"head", {head_begin, layout.total()}});
  // The layout promises contiguity; the plan relies on it.
  for (size_t i = 1; i < units.size(); ++i)
    INTELLECT_CHECK(units[i].range.begin == units[i - 1].range.end, "flat units are not contiguous");
  INTELLECT_CHECK(units.front().range.begin == 0 && units.back().range.end == layout.total());
  return units;
}

void local_decay_ranges(const ParamLayout& layout, const std::vector<ShardPiece>& pieces, size_t local_n,
                        bool decay_all, std::vector<int64_t>& bounds, std::vector<uint8_t>& flags) {
  bounds.assign(1, 0);
  flags.clear();
  auto push = [&](size_t end, uint8_t flag) {
    if (end <= static_cast<size_t>(bounds.back())) return;
    if (!flags.empty() && flags.back() == flag) {
      bounds.back() = static_cast<int64_t>(end);
    } else {
      flags.push_back(flag);
      bounds.push_back(static_cast<int64_t>(end));
    }
  };
  for (const ShardPiece& pc : pieces) {
    INTELLECT_CHECK(pc.local_begin + pc.len <= local_n, "shard piece beyond the local buffer");
    push(pc.local_begin, 0);
    const size_t lo = pc.flat_begin, hi = pc.flat_begin + pc.len;
    for (const ParamEntry& e : layout.entries()) {
      const size_t b = std::max(lo, e.offset), en = std::min(hi, e.offset + e.numel);
      if (b >= en) continue;
      const uint8_t decay = decay_all || (!e.is_norm && e.name != "embed");
      push(pc.local_begin + (en - lo), decay);
    }
  }
  push(local_n, 0);
}

}  // namespace intellect
