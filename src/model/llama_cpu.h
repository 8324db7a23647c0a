// The Llama-3 model on the CPU backend: explicit forward and backward over the
// flat parameter buffer, in fp32, built from the CPU kernels. This is the
// oracle the CUDA backend is tested against.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/cross_entropy.h"
#include "kernels/rope.h"
#include "model/config.h"
#include "model/layout.h"

namespace intellect {

class LlamaCpu {
 public:
  explicit LlamaCpu(const ModelConfig& cfg);

  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }

  // Forward over tokens [B, T]. With targets (same shape, < 0 = ignore) it also
  // computes the loss and leaves dlogits = grad_scale · ∂(sum losses)/∂logits
  // ready for backward(). Activations are kept until the next forward.
  // cu_seqlens (n_segments + 1 entries, as Batch::cu_seqlens) masks attention
  // per packed document, for the backward too; nullptr: causal over each row.
  cpu::LossSums forward(const float* params, const int32_t* tokens, const int32_t* targets,
                        int64_t B, int64_t T, float z_weight, float grad_scale,
                        const int32_t* cu_seqlens = nullptr, int64_t n_segments = 0);
  // Logits [B*T, V] of the last forward.
  const float* logits() const { return logits_.data(); }

  // Adds the gradient of the last forward's loss to `grads` (flat, like params).
  void backward(const float* params, float* grads);

 private:
  void resize(int64_t B, int64_t T);

  ModelConfig cfg_;
  ParamLayout layout_;
  int64_t B_ = 0, T_ = 0;
  RopeTable rope_;
  std::vector<int32_t> tokens_;
  std::vector<int32_t> cu_seqlens_;  // the last forward's document segments; empty = none

  // Activations, rows = B*T. resid_[l] is the residual stream entering block l;
  // resid_[L] leaves the last block.
  struct Block {
    std::vector<float> norm1, rstd1, qkv, att, lse, resid_mid, norm2, rstd2, gate_up, act;
  };
  std::vector<std::vector<float>> resid_;
  std::vector<Block> blocks_;
  std::vector<float> norm_f_, rstd_f_, logits_, dlogits_;
  // Backward scratch.
  std::vector<float> dresid_, dnorm_, dqkv_, datt_, dgate_up_, dact_;
};

}  // namespace intellect
