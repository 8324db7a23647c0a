// How a node's GPUs share the flat parameter buffer (FSDP), and how the
// pseudo-gradient is cut into the segments of the cross-node rings.
//
// Flat units: the input embedding, each transformer block (contiguous in
// ParamLayout), and the head (final norm + lm_head). Each unit is split into
// `world` equal shards, the last padded, so one all-gather rebuilds the unit
// and one reduce-scatter leaves each GPU the gradient of its own shard. Shard
// lengths are rounded up to `align` elements so every shard starts aligned
// for NCCL and vector loads.
//
// Ring segments are cut from the whole flat buffer independently of how many
// GPUs a node has: the outer parameters and pseudo-gradient live in host
// memory in flat coordinates, so nodes with 1, 2 or 8 GPUs run the same K
// rings over the same segments.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/layout.h"

namespace intellect {

class ShardPlan {
 public:
  ShardPlan(const ParamLayout& layout, int world, size_t align = 64);

  int world() const { return world_; }
  const std::vector<FlatUnit>& units() const { return units_; }
  // Elements per rank of unit u, padding included (identical on every rank).
  size_t shard_len(size_t u) const { return shard_len_[u]; }
  // The flat range rank r owns in unit u (may be shorter than shard_len, or
  // empty, at the end of the unit).
  FlatRange shard(size_t u, int rank) const;
  // Where unit u's shard starts in a rank's local shard buffer, and that
  // buffer's size: Σ shard_len over units.
  size_t local_offset(size_t u) const { return local_offset_[u]; }
  size_t local_elements() const { return local_elements_; }
  // Elements rank r owns (no padding): Σ over units of shard(u, r).size().
  size_t owned_elements(int rank) const;
  // The non-empty pieces rank r owns, one per unit at most, in flat order.
  // Everything else in its local buffer is padding (kept at zero).
  std::vector<ShardPiece> pieces(int rank) const;
  // Largest unit, padded: the size of one all-gather buffer.
  size_t max_unit_padded() const { return max_unit_padded_; }

 private:
  int world_;
  std::vector<FlatUnit> units_;
  std::vector<size_t> shard_len_, local_offset_;
  size_t local_elements_ = 0, max_unit_padded_ = 0;
};

// K contiguous, nearly equal segments of [0, total): segment k is carried by
// ring k across nodes. Segments differ in length by at most one element.
std::vector<FlatRange> ring_segments(size_t total, int k);

}  // namespace intellect
