// What one GPU of a node needs for a config, without a GPU: the same buffers
// LlamaCuda allocates (weights, gradients, optimizer state, FSDP's gather
// slots, the step's working buffers, the residual stream) and the recompute
// plan the activations would get from what is left. `intellect_train
// --plan-memory` prints it, so a user can size a node before renting one.
//
// Pure host arithmetic, owned by whoever calls it. It mirrors LlamaCuda's
// constructor: a buffer added there belongs here too (MemoryEstimate's test
// compares the total with what the H200 reported).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/memory_plan.h"
#include "train/config.h"

namespace intellect {

struct MemoryEstimate {
  int gpus = 1;
  size_t gpu_bytes = 0;        // the memory planned for (train.memory_limit_gib)
  size_t weights = 0;          // bf16 weights (this GPU's shard)
  size_t gradients = 0;        // bf16 or fp32 (FSDP: fp32 shard)
  size_t optimizer = 0;        // AdamW m and v, fp32 master weights when on
  size_t gather_buffers = 0;   // FSDP: three unit slots of weights and of gradients, reduce-scatter output
  size_t step_buffers = 0;     // backward's working set, final norm, classifier chunk, workspaces, tokens
  size_t fp8_scratch = 0;      // of step_buffers: FP8 operands (precision.matmul fp8)
  size_t residual_stream = 0;  // the input of every block (kept at every level)
  size_t reserve = 0;          // CUDA context and libraries' lazy buffers, as the auto plan leaves free
  MemoryPlan plan;             // the activations' levels and bytes
  bool fits = false;
  size_t total() const;  // everything above plus plan.activation_bytes
  std::string describe() const;
};

// gpu_bytes 0: cfg.train.memory_limit_gib (which must then be set).
MemoryEstimate estimate_gpu_memory(const Config& cfg, int gpus, size_t gpu_bytes = 0);

}  // namespace intellect
