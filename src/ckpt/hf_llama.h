// HuggingFace Llama interop: config.json ↔ ModelConfig, and the map between
// HF tensor names and ranges of our flat parameter buffer. Because q/k/v and
// gate/up are row blocks of our fused matrices, every HF tensor is one
// contiguous flat range.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/layout.h"

namespace intellect {

// Reads a HF LlamaForCausalLM config.json. Both rope forms are accepted:
// `rope_theta` + `rope_scaling`, and transformers v5's `rope_parameters`.
// `source` names the file in errors.
ModelConfig model_config_from_hf(const nlohmann::json& hf, const std::string& source);

struct HfTensor {
  std::string name;            // e.g. "model.layers.0.self_attn.k_proj.weight"
  std::vector<int64_t> shape;
  size_t offset = 0;           // into the flat buffer
  size_t numel = 0;
};
// Every HF parameter of the model, in HF's module order. With tied embeddings
// there is no lm_head.weight (HF shares it with model.embed_tokens.weight).
std::vector<HfTensor> hf_tensor_map(const ModelConfig& cfg, const ParamLayout& layout);

struct HfModel {
  ModelConfig config;
  std::vector<float> params;  // flat, laid out by ParamLayout(config)
};
// Loads a HF directory: config.json plus model.safetensors, or shards listed in
// model.safetensors.index.json. F32, BF16 and F16 weights. Every expected
// tensor must be present with its exact shape; unknown tensors are refused.
HfModel load_hf_model(const std::string& dir);

}  // namespace intellect
