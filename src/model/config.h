// ModelConfig: the shape of a Llama-3-style model. The same struct comes from
// our JSON configs (`model` block) and from HuggingFace config.json files.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace intellect {

class JsonReader;

struct RopeScaling {
  std::string type = "none";  // "none" or "llama3"
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;
  int64_t max_seq_len = 0;
  double rope_theta = 500000.0;
  RopeScaling rope_scaling;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  double init_std = 0.02;
  int64_t bos_id = -1;  // -1: none
  int64_t eos_id = -1;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t qkv_dim() const { return q_dim() + 2 * kv_dim(); }

  // Parameters, and those of the input embedding (MFU counts exclude the latter).
  int64_t num_params() const;
  int64_t num_embedding_params() const { return vocab_size * dim; }

  static ModelConfig from_json(JsonReader& r);  // our `model` block
  nlohmann::json to_json() const;
};

// Fails naming the first token id outside [0, vocab) or target id ≥ vocab
// (a target below 0 means "no loss here"). The GPU backends check before a
// launch: a bad id would index past the embedding table on the device.
void check_token_ids(const int32_t* tokens, const int32_t* targets, int64_t n, int64_t vocab);

}  // namespace intellect
