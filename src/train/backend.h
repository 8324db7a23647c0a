// A Backend is one model replica on one device, with its optimizer: what the
// training loop and the tools drive. The CPU backend (fp32, the oracle) and
// the CUDA backend (bf16, fast) share the flat parameter layout, so weights,
// gradients and everything built on flat ranges move between them unchanged.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cross_entropy.h"
#include "model/layout.h"
#include "train/config.h"

namespace intellect {

struct StepStats {
  cpu::LossSums loss;       // summed over the step's micro-batches
  double grad_norm = 0.0;   // global norm before clipping
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string describe() const = 0;
  virtual const ParamLayout& layout() const = 0;

  virtual void set_params(const float* host) = 0;  // fp32, flat
  virtual void get_params(float* host) = 0;
  // Makes [host, host + n) a buffer that set_params/get_params copy by DMA
  // (the GPU backends page-lock it; the outer step's weights, moved at every
  // boundary). False, with the reason in *why, when the backend does not or
  // cannot: the copies still work, through staging. unpin_params_buffer
  // before the buffer is freed or moved.
  virtual bool pin_params_buffer(float* host, size_t n, std::string* why) {
    (void)host, (void)n;
    if (why) *why = "the CPU backend reads and writes host memory directly";
    return false;
  }
  virtual void unpin_params_buffer(float* host) { (void)host; }
  virtual void get_grads(float* host) = 0;
  virtual void zero_grads() = 0;
  // AdamW's state as flat fp32 buffers and its step counter, for checkpoints.
  virtual void get_optimizer_state(std::vector<float>& exp_avg, std::vector<float>& exp_avg_sq,
                                   int64_t& step) = 0;
  virtual void set_optimizer_state(const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq,
                                   int64_t step) = 0;

  // One micro-batch [B, seq_len]: forward, and backward when asked (gradients
  // accumulate). Loss sums accumulate until take_loss() or step().
  // logits_host (nullable) receives fp32 logits [B*T, V].
  // cu_seqlens (nullable; n_segments + 1 entries, as Batch::cu_seqlens) masks
  // attention per packed document; nullptr: causal over each row.
  virtual void run(const int32_t* tokens, const int32_t* targets, int64_t B, float z_weight,
                   float grad_scale, bool backward, float* logits_host = nullptr,
                   const int32_t* cu_seqlens = nullptr, int64_t n_segments = 0) = 0;
  virtual cpu::LossSums take_loss() = 0;
  // AdamW at learning rate lr (step counter kept inside).
  virtual StepStats step(double lr) = 0;
};

// The backend named by train.device, sized for micro-batches of up to
// max_batch sequences of seq_len tokens.
std::unique_ptr<Backend> make_backend(const Config& cfg, int64_t max_batch, int64_t seq_len);

}  // namespace intellect
