// diloco.compression "blocks4" and "blocks2": each outer round every node
// sends the same subset of the flat pseudo-gradient's blocks, at int4
// (quantize4.h) or int2 (quantize2.h), through the dense ring. Both share
// everything here; only the ring's codec differs. The blocks not sent keep
// training on each node (their weights are not reset to the outer
// parameters: keep_unsent_progress), so the next time a block is sent its δ
// holds all its progress since; the quantization error of what was sent
// waits in the node's error-feedback buffer.
//
// Why a shared subset: top-k sparse picks different indices on every node,
// so its contributions cannot be summed on the way and travel whole in an
// all-gather ((N − 1) contributions per node). When every node picks the
// same blocks, the selected values are one dense vector on every node, and
// the ordinary ring all-reduce (2(N − 1)/N of its bytes per node, the
// chunk's owner quantizing the average once) averages them. The selection
// is a pure function of (diloco.block_seed, the outer step): no
// communication, and a late node or a joiner knows which blocks a round it
// fetches from a donor covers.
//
// The rotation: the blocks (kRotationBlock values each, the last one
// shorter) are shuffled once per cycle of P = ceil(1 / fraction) rounds with
// a seeded permutation, and round k takes the ((k − 1) mod P)-th of P
// near-equal parts of cycle (k − 1) / P's permutation. So every block is
// sent exactly once per cycle: none waits more than 2P − 1 rounds (the first
// part of a cycle after the last of the one before), unlike independent
// random draws, where some block waits arbitrarily long. The fraction sent
// per round is 1/P of the blocks (a fraction f is rounded down to 1/P).
// The run's last outer step (train.steps / diloco.inner_steps, the same on
// every node) sends every block: the blocks not sent lately hold up to
// 2P − 1 rounds of each node's progress only in its weights, and the
// outer parameters without it are a mix of blocks of different ages.
//
// Threads: immutable after construction; selections are plain values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace intellect {

class BlockCodec;  // codec.h

// A block of the rotation: 64 int4 (or int2) groups, so the compact vector's
// groups line up with the blocks (but for the model's last, shorter block).
constexpr size_t kRotationBlock = 4096;

// The blocks one round sends: ascending block indices over [0, n).
struct BlockSelection {
  size_t n = 0;                  // values in the whole flat vector
  size_t block = kRotationBlock;
  std::vector<uint32_t> blocks;  // ascending
  size_t values = 0;             // values covered: the compact vector's length

  size_t begin_of(uint32_t b) const { return static_cast<size_t>(b) * block; }
  size_t len_of(uint32_t b) const;
  // compact = a + b over the selected blocks, in ascending order (b may be empty: a alone).
  void gather(std::span<const float> a, std::span<const float> b, std::span<float> compact) const;
  // full = compact on the selected blocks, 0 everywhere else.
  void scatter(std::span<const float> compact, std::span<float> full) const;
  // Per block of the whole vector: 1 when selected (an outer step's StepMask, diloco.h).
  std::vector<uint8_t> chosen() const;
};

class BlockRotation {
 public:
  // Fails (naming diloco.block_fraction) unless 0 < fraction ≤ 1 and there
  // are at least P blocks (a model smaller than that would send nothing in
  // some rounds).
  // final_round (0: none): the run's last outer step, which sends every
  // block (the run ends on the average of every node's whole progress).
  BlockRotation(size_t n, double fraction, uint64_t seed, int64_t final_round = 0, size_t block = kRotationBlock);
  size_t period() const { return period_; }
  size_t blocks() const { return blocks_; }
  // Outer step k (≥ 1: the first boundary is outer step 1).
  BlockSelection select(int64_t k) const;

 private:
  size_t n_, block_, blocks_, period_;
  uint64_t seed_;
  int64_t final_round_;
};

// After a block rotation's outer step (θ the new outer parameters, δ = θ_old − w
// the round's pseudo-gradient, weights = θ on entry): the blocks this round
// did not average keep the node's own progress on top of θ, weights = θ − δ
// (where the outer step moved θ there only by momentum, that is the node's
// weights moved along with it); the averaged blocks stay at θ. sel null:
// every block keeps its progress (a node late for the ring, whose δ was in
// no average). As Streaming DiLoCo's fragments: a block's local training
// runs on until the block is synchronized, so its next δ holds all the
// progress since, and no round of it is redone from a stale start.
void keep_unsent_progress(const BlockSelection* sel, std::span<const float> theta, std::span<const float> delta,
                          std::span<float> weights);

// P = ceil(1 / fraction) (with a little slack for fractions like 0.2 that
// are not exact in binary).
size_t rotation_period(double fraction);

// What a node sends of its selected values: compact = `codec`'s round trip
// (int4 or int2, the ring's codec) of (delta + residual) over the selection
// (its groups from the compact vector's start). Its error feedback then keeps (delta + residual − sent):
// the unselected blocks whole, and the quantization error of the selected.
// Runs on the caller's OpenMP team; the same bits on any thread count.
void rotation_prepare(const BlockSelection& sel, std::span<const float> delta, std::span<const float> residual,
                      std::span<float> compact, const BlockCodec& codec);

}  // namespace intellect
