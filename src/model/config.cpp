#include "model/config.h"

#include "model/layout.h"
#include "util/error.h"
#include "util/json_reader.h"

namespace intellect {

int64_t ModelConfig::num_params() const { return static_cast<int64_t>(ParamLayout(*this).total()); }

ModelConfig ModelConfig::from_json(JsonReader& r) {
  constexpr int64_t kBig = int64_t(1) << 31;
  ModelConfig c;
  c.vocab_size = r.get_int("vocab_size", std::nullopt, 2, kBig);
  c.dim = r.get_int("dim", std::nullopt, 1, kBig);
  c.n_layers = r.get_int("n_layers", std::nullopt, 1, 100000);
  c.n_heads = r.get_int("n_heads", std::nullopt, 1, 100000);
  c.n_kv_heads = r.get_int("n_kv_heads", c.n_heads, 1, 100000);
  c.head_dim = r.get_int("head_dim", c.dim / c.n_heads, 2, 100000);
  c.ffn_dim = r.get_int("ffn_dim", std::nullopt, 1, kBig);
  c.max_seq_len = r.get_int("max_seq_len", std::nullopt, 2, kBig);
  c.rope_theta = r.get_double("rope_theta", 500000.0, 1.0, 1e12);
  c.norm_eps = r.get_double("norm_eps", 1e-5, 0.0, 1.0);
  c.tie_embeddings = r.get_bool("tie_embeddings", false);
  c.init_std = r.get_double("init_std", 0.02, 0.0, 10.0);
  c.bos_id = r.get_int("bos_id", -1, -1, c.vocab_size - 1);
  c.eos_id = r.get_int("eos_id", -1, -1, c.vocab_size - 1);
  {
    JsonReader s = r.child("rope_scaling");  // null or absent: no scaling
    c.rope_scaling.type = s.get_string("type", "none", {"none", "llama3"});
    c.rope_scaling.factor = s.get_double("factor", 8.0, 1e-6, 1e6);
    c.rope_scaling.low_freq_factor = s.get_double("low_freq_factor", 1.0, 1e-6, 1e6);
    c.rope_scaling.high_freq_factor = s.get_double("high_freq_factor", 4.0, 1e-6, 1e6);
    c.rope_scaling.original_max_position =
        s.get_int("original_max_position_embeddings", 8192, 1, kBig);
    if (c.rope_scaling.type == "llama3" &&
        c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor)
      s.error("high_freq_factor", "must be greater than low_freq_factor");
    s.finish();
  }
  if (c.n_heads % c.n_kv_heads != 0)
    r.error("n_kv_heads", str("must divide n_heads (", c.n_heads, "), got ", c.n_kv_heads));
  if (c.head_dim % 2 != 0) r.error("head_dim", str("must be even for RoPE, got ", c.head_dim));
  return c;
}

nlohmann::json ModelConfig::to_json() const {
  nlohmann::json j = {{"vocab_size", vocab_size},   {"dim", dim},
                      {"n_layers", n_layers},       {"n_heads", n_heads},
                      {"n_kv_heads", n_kv_heads},   {"head_dim", head_dim},
                      {"ffn_dim", ffn_dim},         {"max_seq_len", max_seq_len},
                      {"rope_theta", rope_theta},   {"norm_eps", norm_eps},
                      {"tie_embeddings", tie_embeddings}, {"init_std", init_std},
                      {"bos_id", bos_id},           {"eos_id", eos_id}};
  if (rope_scaling.type == "none") {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"type", rope_scaling.type},
                         {"factor", rope_scaling.factor},
                         {"low_freq_factor", rope_scaling.low_freq_factor},
                         {"high_freq_factor", rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", rope_scaling.original_max_position}};
  }
  return j;
}

void check_token_ids(const int32_t* tokens, const int32_t* targets, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail("token id ", tokens[i], " at position ", i, " is outside the vocabulary [0, ", vocab, ")");
    if (targets[i] >= vocab)
      fail("target id ", targets[i], " at position ", i, " is outside the vocabulary [0, ", vocab, ")");
  }
}

}  // namespace intellect
