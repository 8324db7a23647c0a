#include "dist/shard_plan.h"

#include <algorithm>

#include "util/error.h"

namespace intellect {

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

ShardPlan::ShardPlan(const ParamLayout& layout, int world, size_t align)
    : world_(world), units_(flat_units(layout)) {
  if (world < 1) fail("shard plan: the number of GPUs must be at least 1, got ", world);
  if (align < 1) fail("shard plan: alignment must be at least 1 element");
  for (const FlatUnit& u : units_) {
    const size_t per_rank = (u.range.size() + world - 1) / world;
    const size_t len = (per_rank + align - 1) / align * align;
    local_offset_.push_back(local_elements_);
    shard_len_.push_back(len);
    local_elements_ += len;
    max_unit_padded_ = std::max(max_unit_padded_, len * static_cast<size_t>(world));
  }
}

FlatRange ShardPlan::shard(size_t u, int rank) const {
  INTELLECT_CHECK(u < units_.size() && rank >= 0 && rank < world_);
  const FlatRange& r = units_[u].range;
  const size_t begin = std::min(r.end, r.begin + shard_len_[u] * static_cast<size_t>(rank));
  const size_t end = std::min(r.end, begin + shard_len_[u]);
  return {begin, end};
}

size_t ShardPlan::owned_elements(int rank) const {
  size_t n = 0;
  for (size_t u = 0; u < units_.size(); ++u) n += shard(u, rank).size();
  return n;
}

std::vector<ShardPiece> ShardPlan::pieces(int rank) const {
  std::vector<ShardPiece> out;
  for (size_t u = 0; u < units_.size(); ++u) {
    const FlatRange r = shard(u, rank);
    if (r.size() > 0) out.push_back({local_offset_[u], r.begin, r.size()});
  }
  return out;
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

std::vector<FlatRange> ring_segments(size_t total, int k) {
  if (k < 1) fail("ring segments: need at least one ring, got ", k);
  std::vector<FlatRange> segs;
  const size_t base = total / static_cast<size_t>(k), extra = total % static_cast<size_t>(k);
  size_t at = 0;
  for (int i = 0; i < k; ++i) {
    const size_t len = base + (static_cast<size_t>(i) < extra ? 1 : 0);
    segs.push_back({at, at + len});
    at += len;
  }
  return segs;
}

}  // namespace intellect
