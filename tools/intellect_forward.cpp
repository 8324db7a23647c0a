// intellect_forward: runs a HuggingFace Llama model on given tokens and writes
// logits, the loss and (with --grads) every parameter's gradient, as HF
// transformers computes them with labels = input_ids.
//   intellect_forward --model DIR --tokens IN.safetensors --out OUT.safetensors
//                     [--grads] [--device cpu] [--threads N]
#include <omp.h>

#include <cstdio>
#include <string>
#include <vector>

#include "ckpt/hf_llama.h"
#include "ckpt/safetensors.h"
#include "train/backend.h"
#include "util/error.h"

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "usage: intellect_forward --model DIR --tokens IN.safetensors --out OUT.safetensors "
               "[--grads] [--device cpu] [--threads N]\n"
               "  DIR  HuggingFace Llama directory (config.json + *.safetensors, F32/BF16/F16)\n"
               "  IN   holds input_ids, I32 [B, T]\n"
               "  OUT  gets logits F32 [B,T,V], loss F32 [1] and with --grads grad.<name> F32\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace intellect;
  std::string model_dir, tokens_path, out_path, device = "cpu";
  bool want_grads = false;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "intellect_forward: %s needs a value\n", a.c_str());
        usage(stderr);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") model_dir = value();
    else if (a == "--tokens") tokens_path = value();
    else if (a == "--out") out_path = value();
    else if (a == "--grads") want_grads = true;
    else if (a == "--device") device = value();
    else if (a == "--threads") threads = std::atoi(value().c_str());
    else if (a == "-h" || a == "--help") { usage(stdout); return 0; }
    else {
      std::fprintf(stderr, "intellect_forward: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (model_dir.empty() || tokens_path.empty() || out_path.empty()) {
    usage(stderr);
    return 2;
  }
  try {
    if (device != "cpu" && device != "cuda") fail("--device ", device, ": expected cpu or cuda");
    if (threads > 0) omp_set_num_threads(threads);
    HfModel hf = load_hf_model(model_dir);
    const ModelConfig& cfg = hf.config;

    const st::File in = st::File::open(tokens_path);
    const st::TensorInfo& ids_info = in.get("input_ids");
    if (ids_info.shape.size() != 2)
      fail(tokens_path, ": input_ids must be 2-D [B, T], got ", ids_info.shape.size(), " dimensions");
    const int64_t B = ids_info.shape[0], T = ids_info.shape[1];
    if (B < 1 || T < 1) fail(tokens_path, ": input_ids is empty");
    const std::vector<int32_t> ids = in.read_i32("input_ids");
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= cfg.vocab_size)
        fail(tokens_path, ": input_ids[", i / T, ", ", i % T, "] = ", ids[i],
             " is outside the vocabulary [0, ", cfg.vocab_size, ")");

    // labels = input_ids, shifted inside the loss: position t predicts t+1.
    std::vector<int32_t> targets(B * T, -1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t + 1 < T; ++t) targets[b * T + t] = ids[b * T + t + 1];
    const int64_t n_targets = B * (T - 1);

    Config run;
    run.model = cfg;
    run.train.device = device;
    run.train.seq_len = T;
    std::unique_ptr<Backend> backend = make_backend(run, B, T);
    backend->set_params(hf.params.data());
    backend->zero_grads();
    const float scale = n_targets > 0 ? 1.0f / static_cast<float>(n_targets) : 0.0f;
    std::vector<float> logits(static_cast<size_t>(B * T * cfg.vocab_size));
    backend->run(ids.data(), targets.data(), B, 0.0f, scale, want_grads, logits.data());
    const cpu::LossSums s = backend->take_loss();
    const float loss = n_targets > 0 ? static_cast<float>(s.ce / static_cast<double>(n_targets)) : NAN;

    st::Writer w;
    w.add_f32("logits", {B, T, cfg.vocab_size}, logits.data());
    w.add_f32("loss", {1}, &loss);
    if (want_grads) {
      std::vector<float> grads(backend->layout().total(), 0.0f);
      backend->get_grads(grads.data());
      for (const HfTensor& t : hf_tensor_map(cfg, backend->layout()))
        w.add_f32("grad." + t.name, t.shape, grads.data() + t.offset);
    }
    w.set_metadata("format", "pt");
    w.write(out_path);
    std::fprintf(stderr, "intellect_forward: B=%lld T=%lld V=%lld loss %.6f -> %s\n",
                 static_cast<long long>(B), static_cast<long long>(T),
                 static_cast<long long>(cfg.vocab_size), loss, out_path.c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "intellect_forward: error: %s\n", e.what());
    return 1;
  }
}
