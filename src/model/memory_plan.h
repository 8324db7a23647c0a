// What the CUDA model keeps between its forward and backward passes, block by
// block, and how much memory that takes. Pure host arithmetic, so the planner
// is tested on machines without a GPU.
//
// A block keeps its activations at one of three levels:
//   none: everything the backward pass reads (nothing recomputed);
//   ops:  only what a GEMM or attention produced (qkv, attention output,
//         the mid-block residual, gate|up) plus the norms' rstd and the
//         softmax stats; the two RMSNorm outputs and SwiGLU's output are
//         recomputed from them in backward: memory-bound work, about 2% of a
//         block's time, for a third of its activation bytes;
//   full: nothing but its input (the residual stream); the whole block's
//         forward pass runs again in backward (a third more GEMM FLOPs).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/fp8.h"
#include "model/config.h"

namespace intellect {

enum class Recompute : uint8_t { none, ops, full };

const char* recompute_name(Recompute r);

// train.recompute as configured: "auto" plans from the GPU's free memory;
// otherwise one level per block.
struct RecomputeSpec {
  bool automatic = true;
  std::vector<Recompute> blocks;  // n_layers entries when not automatic
};

// The classifier's rows per chunk for N rows and a vocabulary of V: one
// chunk of bf16 logits under 512 MiB, in whole multiples of 128 rows (the
// GEMM's tile height: a ragged chunk ran the lm_head at 87% of cuBLAS's rate).
int64_t classifier_chunk_rows(int64_t N, int64_t V);

// The FP8 linear layers' scratch (precision.matmul "fp8") at N tokens a
// micro-batch: one FP8 copy of the largest linear input, of the largest
// output gradient, and of the largest weight twice (as is, and transposed for
// the input gradient), cast just before each product (FP8 weight gradients
// cast the input and the output gradient transposed into the same two
// buffers, free by then); and the scales: kFp8FixedSlots slots for the
// operands in hand, and each block's four weights' and four inputs' absolute
// maxima (kFp8SlotsPerBlock), kept from the forward pass for the backward one.
// With the classifier in FP8 too (`classifier`), the buffers also hold a
// chunk's input, a chunk's logit gradient and the head's weight (V x D, cast
// once a step), and two more slots keep the head's weight and chunk input amax.
constexpr int kFp8FixedSlots = 7;
constexpr int kFp8SlotsPerBlock = 8;
constexpr int kFp8ClassifierSlots = 2;
constexpr int kFp8SlotBytes = kFp8ScaleSlotBytes;
struct Fp8Scratch {
  int64_t input = 0, grad = 0, weight = 0;  // elements (bytes) of each FP8 buffer; the weight's twice
  int64_t slots = 0;                        // scale slots of kFp8SlotBytes
};
Fp8Scratch fp8_scratch(const ModelConfig& cfg, int64_t N, bool classifier);
size_t fp8_scratch_bytes(const ModelConfig& cfg, int64_t N, bool classifier);

// Activation bytes of one block at B sequences of T tokens.
struct BlockBytes {
  size_t none = 0;         // a block that keeps everything
  size_t ops = 0;          // a block at op-level recomputation
  size_t shared_ops = 0;   // one set of buffers for recomputed norms and SwiGLU (any block not `none`)
  size_t shared_full = 0;  // one set for the rest of a fully recomputed block (any block `full`)
};
BlockBytes block_activation_bytes(const ModelConfig& cfg, int64_t B, int64_t T);

struct MemoryPlan {
  std::vector<Recompute> blocks;
  size_t activation_bytes = 0;  // per-block and shared buffers the levels imply
  int64_t count(Recompute r) const;
  // "42 blocks: 30 keep everything, 12 recompute norms and SwiGLU, 0 recompute fully; 41.2 GiB"
  std::string describe() const;
};

// The levels a spec fixes, with their bytes.
MemoryPlan fixed_plan(const BlockBytes& bytes, const std::vector<Recompute>& blocks);

// The least recomputation whose activations fit in `budget` bytes: first the
// fewest fully recomputed blocks, then the fewest at op level. Which blocks
// recompute does not change the peak (all buffers are allocated up front);
// they are the first ones. When even full recomputation of every block does
// not fit, that plan is returned and `fits` is false.
MemoryPlan plan_recompute(const BlockBytes& bytes, int64_t n_layers, size_t budget, bool* fits = nullptr);

}  // namespace intellect
