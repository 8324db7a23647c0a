#include "train/backend.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "model/llama_cpu.h"
#include "train/backend_cuda.h"
#include "train/optimizer.h"
#include "util/error.h"

namespace intellect {

namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Config& cfg, int64_t seq_len)
      : model_(cfg.model), optim_(model_.layout(), cfg.optim), T_(seq_len),
        params_(model_.layout().total()), grads_(model_.layout().total(), 0.0f) {}

  std::string describe() const override { return "cpu (fp32 reference)"; }
  const ParamLayout& layout() const override { return model_.layout(); }
  void set_params(const float* host) override { std::copy(host, host + params_.size(), params_.begin()); }
  void get_params(float* host) override { std::copy(params_.begin(), params_.end(), host); }
  void get_grads(float* host) override { std::copy(grads_.begin(), grads_.end(), host); }
  void zero_grads() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }
  void get_optimizer_state(std::vector<float>& m, std::vector<float>& v, int64_t& step) override {
    m = optim_.m();
    v = optim_.v();
    step = optim_.steps_taken();
  }
  void set_optimizer_state(const std::vector<float>& m, const std::vector<float>& v, int64_t step) override {
    if (m.size() != optim_.m().size() || v.size() != optim_.v().size())
      fail("optimizer state has ", m.size(), " values, the model ", optim_.m().size());
    optim_.m() = m;
    optim_.v() = v;
    optim_.set_steps_taken(step);
  }

  void run(const int32_t* tokens, const int32_t* targets, int64_t B, float z_weight, float grad_scale,
           bool backward, float* logits_host, const int32_t* cu_seqlens, int64_t n_segments) override {
    const cpu::LossSums s =
        model_.forward(params_.data(), tokens, targets, B, T_, z_weight, grad_scale, cu_seqlens, n_segments);
    if (logits_host)
      std::memcpy(logits_host, model_.logits(), sizeof(float) * B * T_ * model_.config().vocab_size);
    if (backward) model_.backward(params_.data(), grads_.data());
    loss_.ce += s.ce;
    loss_.z += s.z;
    loss_.n_valid += s.n_valid;
  }

  cpu::LossSums take_loss() override {
    const cpu::LossSums s = loss_;
    loss_ = {};
    return s;
  }

  StepStats step(double lr) override {
    StepStats st;
    st.grad_norm = optim_.step(params_.data(), grads_.data(), lr).grad_norm;
    st.loss = take_loss();
    return st;
  }

 private:
  LlamaCpu model_;
  AdamW optim_;
  int64_t T_;
  std::vector<float> params_, grads_;
  cpu::LossSums loss_;
};

}  // namespace

std::unique_ptr<Backend> make_backend(const Config& cfg, int64_t max_batch, int64_t seq_len) {
  if (cfg.train.device == "cpu") return std::make_unique<CpuBackend>(cfg, seq_len);
#ifdef INTELLECT_HAVE_CUDA
  return make_cuda_backend(cfg, max_batch, seq_len);
#else
  (void)max_batch;
  fail(cfg.source, ": train.device: \"cuda\" needs a build with the CUDA backend "
       "(this one was configured with -DINTELLECT_CUDA=OFF)");
#endif
}

}  // namespace intellect
