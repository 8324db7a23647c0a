#include "train/memory_estimate.h"

#include <algorithm>

#include "dist/shard_plan.h"
#include "model/layout.h"
#include "util/error.h"

namespace intellect {

namespace {

constexpr size_t kGiB = size_t(1) << 30;
constexpr size_t kBf16 = 2, kF32 = 4;


}  // namespace

size_t MemoryEstimate::total() const {
  return weights + gradients + optimizer + gather_buffers + step_buffers + residual_stream + reserve +
         plan.activation_bytes;
}

std::string MemoryEstimate::describe() const {
  const auto g = [](size_t b) { return str(b / double(kGiB), " GiB"); };
  std::string s = str("per GPU, ", gpus, gpus > 1 ? " GPUs (FSDP)" : " GPU", ", planned for ", g(gpu_bytes), ":\n");
  s += str("  weights (bf16)            ", g(weights), "\n");
  s += str("  gradients                 ", g(gradients), "\n");
  s += str("  optimizer state           ", g(optimizer), "\n");
  if (gather_buffers) s += str("  FSDP unit buffers         ", g(gather_buffers), "\n");
  s += str("  step working buffers      ", g(step_buffers),
           fp8_scratch ? str(" (FP8 operands ", g(fp8_scratch), ")") : std::string(), "\n");
  s += str("  residual stream           ", g(residual_stream), "\n");
  s += str("  reserve (context, libs)   ", g(reserve), "\n");
  s += str("  activations               ", g(plan.activation_bytes), " (", plan.describe(), ")\n");
  s += str("  total                     ", g(total()), fits ? "" : "  -- does NOT fit, even recomputing every block");
  return s;
}

MemoryEstimate estimate_gpu_memory(const Config& cfg, int gpus, size_t gpu_bytes) {
  if (gpus < 1) fail("memory estimate: GPU count must be at least 1, got ", gpus);
  if (gpu_bytes == 0) gpu_bytes = static_cast<size_t>(cfg.train.memory_limit_gib * double(kGiB));
  if (gpu_bytes == 0)
    fail(cfg.source, ": planning memory without a GPU needs the GPU's size: set train.memory_limit_gib "
         "(e.g. --set train.memory_limit_gib=80 for an 80 GB H100, 139 for an H200)");
  const ModelConfig& m = cfg.model;
  const int64_t B = cfg.train.micro_batch_size, T = cfg.train.seq_len, N = B * T;
  const int64_t D = m.dim, F = m.ffn_dim, V = m.vocab_size, H = m.n_heads;
  const ParamLayout layout(m);
  const int64_t micro_batches = (cfg.train.batch_size + B - 1) / B;
  const bool grads_bf16 = cfg.precision.grad_dtype == "bf16" ||
                          (cfg.precision.grad_dtype == "auto" && gpus == 1 && micro_batches == 1);
  const bool state_bf16 = cfg.precision.optim_state_dtype == "bf16";

  MemoryEstimate e;
  e.gpus = gpus;
  e.gpu_bytes = gpu_bytes;
  size_t local = layout.total();
  if (gpus > 1) {
    const ShardPlan plan(layout, gpus);
    local = plan.local_elements();
    size_t block_max = 0, big_max = 0, shard_max = 0;
    for (size_t u = 0; u < plan.units().size(); ++u) {
      const size_t padded = plan.shard_len(u) * static_cast<size_t>(gpus);
      if (u == 0 || u + 1 == plan.units().size()) big_max = std::max(big_max, padded);
      else block_max = std::max(block_max, padded);
      shard_max = std::max(shard_max, plan.shard_len(u));
    }
    e.gather_buffers = (2 * block_max + big_max) * (kBf16 + kF32) + shard_max * kF32;
    if (cfg.precision.grad_reduce_dtype == "bf16") e.gather_buffers += std::max(big_max, block_max) * kBf16;
  }
  e.weights = local * kBf16;
  e.gradients = local * (grads_bf16 ? kBf16 : kF32);
  e.optimizer = 2 * local * (state_bf16 ? kBf16 : kF32) + (cfg.precision.master_weights ? local * kF32 : 0);
  // LlamaCuda's constructor: final norm and head input, one classifier chunk of
  // logits, per-row losses, backward's buffers, attention scratch, token arrays,
  // RMSNorm backward partials; the workspace is cuBLAS's 32 MiB or cuDNN's,
  // which holds two fp32 copies of dQ (its accumulator and softmax sums).
  const size_t rows = static_cast<size_t>(classifier_chunk_rows(N, V));
  size_t step = 2 * N * D * kBf16 + rows * V * kBf16 + 3 * N * kF32;
  step += (2 * N * D + N * m.qkv_dim() + N * m.q_dim() + N * 2 * F + N * F) * kBf16;
  step += static_cast<size_t>(B * H * T) * kF32 + 5 * N * sizeof(int32_t);
  step += 264 * static_cast<size_t>(D) * kF32;  // rmsnorm backward's per-block partial gains
  step += std::max<size_t>(size_t(32) << 20, 2 * static_cast<size_t>(N * H * m.head_dim) * kF32 + (size_t(1) << 20));
  if (cfg.precision.matmul == "fp8") {
    e.fp8_scratch = fp8_scratch_bytes(m, N, cfg.precision.fp8_classifier);
    step += e.fp8_scratch;
  }
  e.step_buffers = step;
  e.residual_stream = static_cast<size_t>(m.n_layers + 1) * N * D * kBf16;
  e.reserve = size_t(3) << 29;  // the 1.5 GiB LlamaCuda's auto plan leaves free
  const size_t fixed = e.weights + e.gradients + e.optimizer + e.gather_buffers + e.step_buffers + e.residual_stream;
  const BlockBytes bb = block_activation_bytes(m, B, T);
  if (cfg.train.recompute.automatic) {
    const size_t budget = gpu_bytes > fixed + e.reserve ? gpu_bytes - fixed - e.reserve : 0;
    e.plan = plan_recompute(bb, m.n_layers, budget, &e.fits);
  } else {
    e.plan = fixed_plan(bb, cfg.train.recompute.blocks);
    e.fits = e.total() <= gpu_bytes;
  }
  if (fixed + e.reserve > gpu_bytes) e.fits = false;
  return e;
}

}  // namespace intellect
