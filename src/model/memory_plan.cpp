#include "model/memory_plan.h"

#include <algorithm>

#include "util/error.h"

namespace intellect {

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::none: return "none";
    case Recompute::ops: return "ops";
    case Recompute::full: return "full";
  }
  return "?";
}

BlockBytes block_activation_bytes(const ModelConfig& cfg, int64_t B, int64_t T) {
  const size_t N = static_cast<size_t>(B * T), D = cfg.dim, F = cfg.ffn_dim;
  const size_t bf = 2, f32 = 4;
  const size_t norm = N * D * bf;                         // norm1 or norm2
  const size_t act = N * F * bf;                          // SwiGLU output
  const size_t stats = 2 * N * f32 + static_cast<size_t>(B * cfg.n_heads * T) * f32;  // rstd1, rstd2, lse
  const size_t kept = N * cfg.qkv_dim() * bf + N * cfg.q_dim() * bf + N * D * bf + N * 2 * F * bf + stats;
  BlockBytes b;
  b.ops = kept;
  b.none = kept + 2 * norm + act;
  b.shared_ops = norm + act;  // norm1 and norm2 are never live at once
  b.shared_full = kept;
  return b;
}

int64_t MemoryPlan::count(Recompute r) const {
  int64_t n = 0;
  for (Recompute b : blocks) n += b == r;
  return n;
}

std::string MemoryPlan::describe() const {
  return str(blocks.size(), " blocks: ", count(Recompute::none), " keep everything, ", count(Recompute::ops),
             " recompute norms and SwiGLU, ", count(Recompute::full), " recompute fully; activations ",
             activation_bytes / double(size_t(1) << 30), " GiB");
}

MemoryPlan fixed_plan(const BlockBytes& bytes, const std::vector<Recompute>& blocks) {
  MemoryPlan p;
  p.blocks = blocks;
  bool any_ops = false, any_full = false;
  for (Recompute r : blocks) {
    if (r == Recompute::none) p.activation_bytes += bytes.none;
    if (r == Recompute::ops) p.activation_bytes += bytes.ops;
    any_ops |= r != Recompute::none;
    any_full |= r == Recompute::full;
  }
  if (any_ops) p.activation_bytes += bytes.shared_ops;
  if (any_full) p.activation_bytes += bytes.shared_full;
  return p;
}

MemoryPlan plan_recompute(const BlockBytes& bytes, int64_t n_layers, size_t budget, bool* fits) {
  const auto levels = [&](int64_t n_full, int64_t n_ops) {
    std::vector<Recompute> v(static_cast<size_t>(n_layers), Recompute::none);
    for (int64_t l = 0; l < n_full + n_ops; ++l) v[l] = l < n_full ? Recompute::full : Recompute::ops;
    return v;
  };
  for (int64_t n_full = 0; n_full <= n_layers; ++n_full) {
    for (int64_t n_ops = 0; n_full + n_ops <= n_layers; ++n_ops) {
      MemoryPlan p = fixed_plan(bytes, levels(n_full, n_ops));
      if (p.activation_bytes <= budget) {
        if (fits) *fits = true;
        return p;
      }
    }
  }
  if (fits) *fits = false;
  return fixed_plan(bytes, levels(n_layers, 0));
}

int64_t classifier_chunk_rows(int64_t N, int64_t V) {
  int64_t rows = std::max<int64_t>(1, (int64_t(512) << 20) / (2 * V));
  if (rows >= 128) rows = rows / 128 * 128;
  return std::min(N, rows);
}

Fp8Scratch fp8_scratch(const ModelConfig& cfg, int64_t N, bool classifier) {
  const int64_t D = cfg.dim, F = cfg.ffn_dim, Q = cfg.q_dim(), QKV = cfg.qkv_dim(), V = cfg.vocab_size;
  Fp8Scratch s;
  s.input = N * std::max({D, Q, F});
  s.grad = N * std::max({QKV, D, 2 * F});
  s.weight = std::max({QKV * D, D * Q, 2 * F * D, D * F});
  s.slots = kFp8FixedSlots + kFp8SlotsPerBlock * cfg.n_layers;
  if (classifier) {
    const int64_t rows = classifier_chunk_rows(N, V);
    s.grad = std::max(s.grad, rows * V);
    s.weight = std::max(s.weight, V * D);
    s.slots += kFp8ClassifierSlots;
  }
  return s;
}

size_t fp8_scratch_bytes(const ModelConfig& cfg, int64_t N, bool classifier) {
  const Fp8Scratch s = fp8_scratch(cfg, N, classifier);
  return static_cast<size_t>(s.input + s.grad + 2 * s.weight) + static_cast<size_t>(s.slots) * kFp8SlotBytes;
}

}  // namespace intellect
