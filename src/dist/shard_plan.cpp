#include "dist/shard_plan.h"

#include <algorithm>

#include "util/error.h"

namespace intellect {

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
