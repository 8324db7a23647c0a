#include "model/llama_cpu.h"

#include <cstring>

#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/swiglu.h"
#include "util/error.h"

namespace intellect {

LlamaCpu::LlamaCpu(const ModelConfig& cfg) : cfg_(cfg), layout_(cfg) {}

void LlamaCpu::resize(int64_t B, int64_t T) {
  if (B == B_ && T == T_) return;
  if (T > cfg_.max_seq_len)
    fail("sequence length ", T, " exceeds model.max_seq_len = ", cfg_.max_seq_len);
  B_ = B;
  T_ = T;
  const int64_t N = B * T, D = cfg_.dim, F = cfg_.ffn_dim;
  rope_ = rope_table(cfg_, T);
  tokens_.resize(N);
  resid_.assign(cfg_.n_layers + 1, std::vector<float>(N * D));
  blocks_.resize(cfg_.n_layers);
  for (Block& b : blocks_) {
    b.norm1.resize(N * D);
    b.rstd1.resize(N);
    b.qkv.resize(N * cfg_.qkv_dim());
    b.att.resize(N * cfg_.q_dim());
    b.lse.resize(B * cfg_.n_heads * T);
    b.resid_mid.resize(N * D);
    b.norm2.resize(N * D);
    b.rstd2.resize(N);
    b.gate_up.resize(N * 2 * F);
    b.act.resize(N * F);
  }
  norm_f_.resize(N * D);
  rstd_f_.resize(N);
  logits_.resize(N * cfg_.vocab_size);
  dlogits_.resize(N * cfg_.vocab_size);
  dresid_.resize(N * D);
  dnorm_.resize(N * D);
  dqkv_.resize(N * cfg_.qkv_dim());
  datt_.resize(N * cfg_.q_dim());
  dgate_up_.resize(N * 2 * F);
  dact_.resize(N * F);
}

cpu::LossSums LlamaCpu::forward(const float* P, const int32_t* tokens, const int32_t* targets,
                                int64_t B, int64_t T, float z_weight, float grad_scale,
                                const int32_t* cu_seqlens, int64_t n_segments) {
  resize(B, T);
  const int64_t N = B * T, D = cfg_.dim, F = cfg_.ffn_dim, V = cfg_.vocab_size;
  const float eps = static_cast<float>(cfg_.norm_eps);
  const cpu::AttentionShape shape{B, T, cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim};
  std::memcpy(tokens_.data(), tokens, sizeof(int32_t) * N);
  if (cu_seqlens) {
    cpu::check_segments(cu_seqlens, n_segments, B, T);
    cu_seqlens_.assign(cu_seqlens, cu_seqlens + n_segments + 1);
  } else {
    cu_seqlens_.clear();
  }
  const int32_t* segs = cu_seqlens_.empty() ? nullptr : cu_seqlens_.data();
  const int64_t n_segs = static_cast<int64_t>(cu_seqlens_.size()) - 1;

  cpu::embedding_forward(resid_[0].data(), tokens, P + layout_.embed(), N, V, D);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const BlockOffsets& o = layout_.block(l);
    Block& a = blocks_[l];
    const float* x = resid_[l].data();
    // attention
    cpu::rmsnorm_forward(a.norm1.data(), a.rstd1.data(), x, P + o.attn_norm, N, D, eps);
    cpu::matmul_forward(a.qkv.data(), a.norm1.data(), P + o.wqkv, N, cfg_.qkv_dim(), D);
    cpu::rope_apply(a.qkv.data(), B, T, cfg_.n_heads + cfg_.n_kv_heads, cfg_.qkv_dim(), rope_, false);
    cpu::attention_forward(a.att.data(), a.lse.data(), a.qkv.data(), shape, segs, n_segs);
    cpu::matmul_forward(a.resid_mid.data(), a.att.data(), P + o.wo, N, D, cfg_.q_dim());
    for (int64_t i = 0; i < N * D; ++i) a.resid_mid[i] += x[i];
    // MLP
    cpu::rmsnorm_forward(a.norm2.data(), a.rstd2.data(), a.resid_mid.data(), P + o.mlp_norm, N, D, eps);
    cpu::matmul_forward(a.gate_up.data(), a.norm2.data(), P + o.w_gate_up, N, 2 * F, D);
    cpu::swiglu_forward(a.act.data(), a.gate_up.data(), N, F);
    float* out = resid_[l + 1].data();
    cpu::matmul_forward(out, a.act.data(), P + o.w_down, N, D, F);
    for (int64_t i = 0; i < N * D; ++i) out[i] += a.resid_mid[i];
  }
  cpu::rmsnorm_forward(norm_f_.data(), rstd_f_.data(), resid_[cfg_.n_layers].data(),
                       P + layout_.final_norm(), N, D, eps);
  cpu::matmul_forward(logits_.data(), norm_f_.data(), P + layout_.lm_head(), N, V, D);
  if (!targets) return {};
  return cpu::cross_entropy(logits_.data(), dlogits_.data(), targets, N, V, z_weight, grad_scale);
}

void LlamaCpu::backward(const float* P, float* G) {
  INTELLECT_CHECK(B_ > 0, "backward() before forward()");
  const int64_t B = B_, T = T_, N = B * T, D = cfg_.dim, F = cfg_.ffn_dim, V = cfg_.vocab_size;
  const cpu::AttentionShape shape{B, T, cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim};
  const int32_t* segs = cu_seqlens_.empty() ? nullptr : cu_seqlens_.data();
  const int64_t n_segs = static_cast<int64_t>(cu_seqlens_.size()) - 1;

  cpu::matmul_backward(dnorm_.data(), G + layout_.lm_head(), dlogits_.data(), norm_f_.data(),
                       P + layout_.lm_head(), N, V, D);
  cpu::rmsnorm_backward(dresid_.data(), G + layout_.final_norm(), dnorm_.data(),
                        resid_[cfg_.n_layers].data(), P + layout_.final_norm(), rstd_f_.data(), N, D,
                        false);
  for (int l = cfg_.n_layers - 1; l >= 0; --l) {
    const BlockOffsets& o = layout_.block(l);
    Block& a = blocks_[l];
    // MLP: dresid holds ∂L/∂resid_[l+1], which flows unchanged into resid_mid too.
    cpu::matmul_backward(dact_.data(), G + o.w_down, dresid_.data(), a.act.data(), P + o.w_down, N, D, F);
    cpu::swiglu_backward(dgate_up_.data(), dact_.data(), a.gate_up.data(), N, F);
    cpu::matmul_backward(dnorm_.data(), G + o.w_gate_up, dgate_up_.data(), a.norm2.data(),
                         P + o.w_gate_up, N, 2 * F, D);
    cpu::rmsnorm_backward(dresid_.data(), G + o.mlp_norm, dnorm_.data(), a.resid_mid.data(),
                          P + o.mlp_norm, a.rstd2.data(), N, D, true);
    // attention
    cpu::matmul_backward(datt_.data(), G + o.wo, dresid_.data(), a.att.data(), P + o.wo, N, D,
                         cfg_.q_dim());
    cpu::attention_backward(dqkv_.data(), datt_.data(), a.qkv.data(), a.att.data(), a.lse.data(), shape, segs,
                            n_segs);
    cpu::rope_apply(dqkv_.data(), B, T, cfg_.n_heads + cfg_.n_kv_heads, cfg_.qkv_dim(), rope_, true);
    cpu::matmul_backward(dnorm_.data(), G + o.wqkv, dqkv_.data(), a.norm1.data(), P + o.wqkv, N,
                         cfg_.qkv_dim(), D);
    cpu::rmsnorm_backward(dresid_.data(), G + o.attn_norm, dnorm_.data(), resid_[l].data(),
                          P + o.attn_norm, a.rstd1.data(), N, D, true);
  }
  cpu::embedding_backward(G + layout_.embed(), dresid_.data(), tokens_.data(), N, D);
}

}  // namespace intellect
