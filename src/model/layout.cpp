#include "model/layout.h"

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

}  // namespace intellect
