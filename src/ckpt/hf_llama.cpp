#include "ckpt/hf_llama.h"

#include <cstring>
#include <map>
#include <set>

#include "ckpt/safetensors.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {

using nlohmann::json;

namespace {

int64_t need_int(const json& j, const std::string& key, const std::string& source) {
  if (!j.contains(key)) fail(source, ": missing '", key, "'");
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0)
    fail(source, ": '", key, "' must be a positive integer, got ", j[key].dump());
  return j[key].get<int64_t>();
}

double num_or(const json& j, const std::string& key, double def, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) fail(source, ": '", key, "' must be a number, got ", j[key].dump());
  return j[key].get<double>();
}

int64_t token_id(const json& j, const std::string& key) {
  if (!j.contains(key) || j[key].is_null()) return -1;
  if (j[key].is_number_integer()) return j[key].get<int64_t>();
  if (j[key].is_array() && !j[key].empty() && j[key][0].is_number_integer())
    return j[key][0].get<int64_t>();  // Llama 3.1 lists several EOS ids; the first is the main one
  return -1;
}

void read_rope_scaling(const json& s, ModelConfig& c, const std::string& source,
                       const std::string& where) {
  std::string type = s.value("rope_type", s.value("type", std::string("default")));
  if (type == "default") return;
  if (type != "llama3")
    fail(source, ": ", where, ": rope type '", type, "' is not supported (supported: default, llama3)");
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = num_or(s, "factor", 8.0, source);
  c.rope_scaling.low_freq_factor = num_or(s, "low_freq_factor", 1.0, source);
  c.rope_scaling.high_freq_factor = num_or(s, "high_freq_factor", 4.0, source);
  c.rope_scaling.original_max_position =
      static_cast<int64_t>(num_or(s, "original_max_position_embeddings", 8192, source));
}

}  // namespace

ModelConfig model_config_from_hf(const json& hf, const std::string& source) {
  if (!hf.is_object()) fail(source, ": expected a JSON object");
  const std::string type = hf.value("model_type", std::string());
  if (type != "llama")
    fail(source, ": model_type is '", type, "', expected 'llama' (a LlamaForCausalLM directory)");
  if (hf.value("attention_bias", false) || hf.value("mlp_bias", false))
    fail(source, ": attention_bias/mlp_bias are not supported (Llama 3 has no biases)");
  if (hf.value("hidden_act", std::string("silu")) != "silu")
    fail(source, ": hidden_act '", hf["hidden_act"].get<std::string>(), "' is not supported (silu only)");
  ModelConfig c;
  c.vocab_size = need_int(hf, "vocab_size", source);
  c.dim = need_int(hf, "hidden_size", source);
  c.n_layers = need_int(hf, "num_hidden_layers", source);
  c.n_heads = need_int(hf, "num_attention_heads", source);
  c.n_kv_heads = hf.contains("num_key_value_heads") && !hf["num_key_value_heads"].is_null()
                     ? need_int(hf, "num_key_value_heads", source)
                     : c.n_heads;
  c.head_dim = hf.contains("head_dim") && !hf["head_dim"].is_null() ? need_int(hf, "head_dim", source)
                                                                     : c.dim / c.n_heads;
  c.ffn_dim = need_int(hf, "intermediate_size", source);
  c.max_seq_len = hf.contains("max_position_embeddings")
                      ? need_int(hf, "max_position_embeddings", source)
                      : 8192;
  c.norm_eps = num_or(hf, "rms_norm_eps", 1e-6, source);
  c.tie_embeddings = hf.value("tie_word_embeddings", false);
  c.bos_id = token_id(hf, "bos_token_id");
  c.eos_id = token_id(hf, "eos_token_id");
  c.rope_theta = num_or(hf, "rope_theta", 10000.0, source);
  if (hf.contains("rope_parameters") && hf["rope_parameters"].is_object()) {
    const json& rp = hf["rope_parameters"];
    c.rope_theta = num_or(rp, "rope_theta", c.rope_theta, source);
    read_rope_scaling(rp, c, source, "rope_parameters");
  } else if (hf.contains("rope_scaling") && hf["rope_scaling"].is_object()) {
    read_rope_scaling(hf["rope_scaling"], c, source, "rope_scaling");
  }
  if (c.n_heads % c.n_kv_heads != 0)
    fail(source, ": num_key_value_heads (", c.n_kv_heads, ") must divide num_attention_heads (",
         c.n_heads, ")");
  if (c.head_dim % 2 != 0) fail(source, ": head_dim must be even, got ", c.head_dim);
  return c;
}

std::vector<HfTensor> hf_tensor_map(const ModelConfig& c, const ParamLayout& layout) {
  std::vector<HfTensor> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, size_t offset) {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    out.push_back({std::move(name), std::move(shape), offset, n});
  };
  const size_t D = c.dim, F = c.ffn_dim, Q = c.q_dim(), KV = c.kv_dim();
  add("model.embed_tokens.weight", {c.vocab_size, c.dim}, layout.embed());
  for (int l = 0; l < c.n_layers; ++l) {
    const BlockOffsets& b = layout.block(l);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {c.dim}, b.attn_norm);
    add(p + "self_attn.q_proj.weight", {c.q_dim(), c.dim}, b.wqkv);
    add(p + "self_attn.k_proj.weight", {c.kv_dim(), c.dim}, b.wqkv + Q * D);
    add(p + "self_attn.v_proj.weight", {c.kv_dim(), c.dim}, b.wqkv + (Q + KV) * D);
    add(p + "self_attn.o_proj.weight", {c.dim, c.q_dim()}, b.wo);
    add(p + "post_attention_layernorm.weight", {c.dim}, b.mlp_norm);
    add(p + "mlp.gate_proj.weight", {c.ffn_dim, c.dim}, b.w_gate_up);
    add(p + "mlp.up_proj.weight", {c.ffn_dim, c.dim}, b.w_gate_up + F * D);
    add(p + "mlp.down_proj.weight", {c.dim, c.ffn_dim}, b.w_down);
  }
  add("model.norm.weight", {c.dim}, layout.final_norm());
  if (!c.tie_embeddings) add("lm_head.weight", {c.vocab_size, c.dim}, layout.lm_head());
  return out;
}

HfModel load_hf_model(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  if (!path_exists(cfg_path))
    fail("'", dir, "' is not a HuggingFace model directory: no config.json in it");
  json hf;
  try {
    hf = json::parse(read_text_file(cfg_path));
  } catch (const json::parse_error& e) {
    fail(cfg_path, ": not valid JSON: ", e.what());
  }
  HfModel m;
  m.config = model_config_from_hf(hf, cfg_path);
  const ParamLayout layout(m.config);
  m.params.assign(layout.total(), 0.0f);

  // Which file holds which tensor.
  std::vector<std::string> files;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (path_exists(index_path)) {
    json index;
    try {
      index = json::parse(read_text_file(index_path));
    } catch (const json::parse_error& e) {
      fail(index_path, ": not valid JSON: ", e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail(index_path, ": missing the 'weight_map' object");
    std::set<std::string> seen;
    for (auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) fail(index_path, ": weight_map['", name, "'] is not a file name");
      const std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == ".." )
        fail(index_path, ": weight_map['", name, "'] = '", f, "' must be a file in the directory");
      if (seen.insert(f).second) files.push_back(f);
    }
  } else if (path_exists(dir + "/model.safetensors")) {
    files.push_back("model.safetensors");
  } else {
    fail("'", dir, "' has neither model.safetensors nor model.safetensors.index.json");
  }

  std::map<std::string, const HfTensor*> wanted;
  const std::vector<HfTensor> map = hf_tensor_map(m.config, layout);
  for (const HfTensor& t : map) wanted[t.name] = &t;
  std::set<std::string> loaded;
  for (const std::string& f : files) {
    const st::File file = st::File::open(dir + "/" + f);
    for (const st::TensorInfo& info : file.tensors()) {
      if (info.name.ends_with("rotary_emb.inv_freq")) continue;  // a buffer older exports carry
      if (m.config.tie_embeddings && info.name == "lm_head.weight") continue;  // a copy of the embedding
      auto it = wanted.find(info.name);
      if (it == wanted.end())
        fail(file.path(), ": unexpected tensor '", info.name,
             "' (not part of a Llama model with this config.json)");
      const HfTensor& t = *it->second;
      if (info.shape != t.shape) {
        std::string want, got;
        for (auto d : t.shape) want += (want.empty() ? "" : ",") + std::to_string(d);
        for (auto d : info.shape) got += (got.empty() ? "" : ",") + std::to_string(d);
        fail(file.path(), ": tensor '", info.name, "' has shape [", got, "], config.json implies [",
             want, "]");
      }
      if (!loaded.insert(info.name).second) fail(file.path(), ": tensor '", info.name, "' appears twice");
      const std::vector<float> v = file.read_f32(info.name);
      std::memcpy(m.params.data() + t.offset, v.data(), sizeof(float) * t.numel);
    }
  }
  for (const HfTensor& t : map)
    if (!loaded.count(t.name)) fail("'", dir, "': tensor '", t.name, "' is missing");
  return m;
}

}  // namespace intellect
