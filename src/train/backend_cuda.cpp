#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_device.h"
#include "model/llama_cuda.h"
#include "train/backend.h"
#include "train/backend_cuda.h"
#include "util/error.h"

namespace intellect {

namespace {

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Config& cfg, int64_t max_batch, int64_t seq_len)
      : cfg_(cfg), model_(cfg.model, cuda_options(cfg), max_batch, seq_len) {}

  std::string describe() const override {
    return str("cuda: ", cuda::describe_device(0), ", bf16, ",
               cfg_.precision.master_weights ? "fp32 master weights" : "bf16 weights (stochastic rounding)",
               ", AdamW state ", cfg_.precision.optim_state_dtype, ", gradients ",
               cuda_options(cfg_).grads_bf16 ? "bf16" : "fp32",
               cfg_.precision.matmul != "fp8"            ? ""
               : cfg_.precision.fp8_weight_gradients ? ", FP8 linear layers (forward, input and weight gradients)"
                                                     : ", FP8 linear layers (forward and input gradients)",
               cfg_.precision.fp8_classifier ? ", FP8 classifier" : "",
               ", attention: ", model_.attention_impl(),
               ", ", model_.device_bytes() / double(1 << 30), " GiB allocated; recompute plan: ",
               model_.memory_plan().describe(), "; ", model_.gemm_tuning());
  }
  const ParamLayout& layout() const override { return model_.layout(); }
  void set_params(const float* host) override { model_.upload_params(host); }
  void get_params(float* host) override { model_.download_params(host); }
  bool pin_params_buffer(float* host, size_t n, std::string* why) override {
    return cuda::pin_host_memory(host, n * sizeof(float), why);
  }
  void unpin_params_buffer(float* host) override { cuda::unpin_host_memory(host); }
  void get_grads(float* host) override { model_.download_grads(host); }
  void zero_grads() override { model_.zero_grads(); }
  void get_optimizer_state(std::vector<float>& m, std::vector<float>& v, int64_t& step) override {
    m.resize(model_.layout().total());
    v.resize(model_.layout().total());
    model_.download_optimizer_state(m.data(), v.data());
    step = steps_;
  }
  void set_optimizer_state(const std::vector<float>& m, const std::vector<float>& v, int64_t step) override {
    const size_t P = model_.layout().total();
    if (m.size() != P || v.size() != P) fail("optimizer state has ", m.size(), " values, the model ", P);
    model_.upload_optimizer_state(m.data(), v.data());
    steps_ = step;
  }
  void run(const int32_t* tokens, const int32_t* targets, int64_t B, float z_weight, float grad_scale,
           bool backward, float* logits_host, const int32_t* cu_seqlens, int64_t n_segments) override {
    model_.forward_backward(tokens, targets, B, z_weight, grad_scale, backward, logits_host, cu_seqlens, n_segments);
  }
  cpu::LossSums take_loss() override { return model_.take_loss(); }
  StepStats step(double lr) override {
    ++steps_;
    const OptimConfig& o = cfg_.optim;
    const CudaStepStats s = model_.optimizer_step(lr, o.beta1, o.beta2, o.eps, o.weight_decay,
                                                  o.grad_clip, steps_, cfg_.train.seed);
    return {s.loss, s.grad_norm};
  }

 private:
  Config cfg_;
  LlamaCuda model_;
  int64_t steps_ = 0;
};

}  // namespace

bool use_bf16_grads(const Config& cfg) {
  const std::string& d = cfg.precision.grad_dtype;
  if (d == "bf16" && cfg.train.gpus != 1)
    fail(cfg.source, ": precision.grad_dtype \"bf16\" is for one GPU (train.gpus is ", cfg.train.gpus,
         "): FSDP accumulates each GPU's gradient shard in fp32; use \"auto\" or \"fp32\"");
  if (d != "auto") return d == "bf16";
  const int64_t micro_batches = (cfg.train.batch_size + cfg.train.micro_batch_size - 1) / cfg.train.micro_batch_size;
  return cfg.train.gpus == 1 && micro_batches == 1;
}

CudaOptions cuda_options(const Config& cfg) {
  CudaOptions o;
  o.master_weights = cfg.precision.master_weights;
  o.optim_state_bf16 = cfg.precision.optim_state_dtype == "bf16";
  o.recompute = cfg.train.recompute;
  o.memory_limit = static_cast<size_t>(cfg.train.memory_limit_gib * double(size_t(1) << 30));
  o.grads_bf16 = use_bf16_grads(cfg);
  o.attention = cfg.train.attention;
  o.doc_masking = cfg.train.doc_masking;
  o.decay_norms_and_embeddings = cfg.optim.decay_norms_and_embeddings;
  o.reduce_bf16 = cfg.precision.grad_reduce_dtype == "bf16";
  o.fp8 = cfg.precision.matmul == "fp8";
  o.fp8_dw = o.fp8 && cfg.precision.fp8_weight_gradients;
  o.fp8_classifier = o.fp8 && cfg.precision.fp8_classifier;
  return o;
}

int resolve_gpu_count(const Config& cfg) {
  const int visible = cuda::device_count();
  if (visible == 0)
    fail("train.device is \"cuda\" but no CUDA GPU is visible (", cuda::describe_device(0), ")");
  if (cfg.train.gpus == 0) return visible;
  if (cfg.train.gpus > visible && !fsdp_on_shared_gpu())
    fail(cfg.source, ": train.gpus is ", cfg.train.gpus, " but this machine shows ", visible,
         " GPU(s); lower train.gpus, or set it to 0 to use every visible GPU");
  return static_cast<int>(cfg.train.gpus);
}

std::unique_ptr<Backend> make_cuda_backend(const Config& cfg, int64_t max_batch, int64_t seq_len) {
  const int gpus = resolve_gpu_count(cfg);
  if (gpus > 1) return make_fsdp_backend(cfg, gpus, max_batch, seq_len);
  return std::make_unique<CudaBackend>(cfg, max_batch, seq_len);
}

}  // namespace intellect
#endif
