#include "train/config.h"

#include "default_config.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json_reader.h"

namespace intellect {

using nlohmann::json;

Config parse_config(const json& doc, const std::string& source) {
  Config c;
  c.json = doc;
  c.source = source;
  JsonReader root(doc, source);
  constexpr int64_t kBig = int64_t(1) << 40;

  {
    JsonReader r = root.child("model");
    c.model = ModelConfig::from_json(r);
    r.finish();
  }
  {
    JsonReader r = root.child("train");
    TrainConfig& t = c.train;
    t.device = r.get_string("device", "cpu", {"cpu", "cuda"});
    t.seed = static_cast<uint64_t>(r.get_int("seed", 1, 0, kBig));
    t.steps = r.get_int("steps", std::nullopt, 1, kBig);
    t.batch_size = r.get_int("batch_size", std::nullopt, 1, kBig);
    t.micro_batch_size = r.get_int("micro_batch_size", t.batch_size, 1, t.batch_size);
    if (t.batch_size % t.micro_batch_size != 0)
      r.error("micro_batch_size", str("must divide train.batch_size (", t.batch_size, "), got ",
                                      t.micro_batch_size));
    t.seq_len = r.get_int("seq_len", c.model.max_seq_len, 1, c.model.max_seq_len);
    t.z_loss_weight = r.get_double("z_loss_weight", 0.0, 0.0, 1.0);
    t.threads = r.get_int("threads", 0, 0, 4096);
    t.log_every = r.get_int("log_every", 1, 1, kBig);
    t.eval_every = r.get_int("eval_every", 0, 0, kBig);
    t.eval_batches = r.get_int("eval_batches", 4, 1, kBig);
    t.attention = r.get_string("attention", "auto", {"auto", "cudnn", "fallback"});
    // recompute: "none", "all", or a list of block indices.
    t.recompute.assign(c.model.n_layers, false);
    if (r.has("recompute")) {
      const json v = r.get_json("recompute");
      if (v.is_string()) {
        const std::string mode = r.get_string("recompute", "none", {"none", "all"});
        if (mode == "all") t.recompute.assign(c.model.n_layers, true);
      } else if (v.is_array()) {
        for (const json& e : v) {
          if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= c.model.n_layers)
            r.error("recompute", str("block indices must be integers in [0, ", c.model.n_layers,
                                     "), got ", e.dump()));
          t.recompute[e.get<int64_t>()] = true;
        }
      } else {
        r.error("recompute", str("expected \"none\", \"all\" or a list of block indices, got ", v.dump()));
      }
    }
    t.out_dir = r.get_string("out_dir", "runs/default");
    t.metrics_file = r.get_string("metrics_file", "");
    if (t.out_dir.empty()) r.error("out_dir", "must not be empty");
    r.finish();
  }
  {
    JsonReader r = root.child("optim");
    OptimConfig& o = c.optim;
    o.lr = r.get_double("lr", std::nullopt, 0.0, 10.0);
    o.beta1 = r.get_double("beta1", 0.9, 0.0, 0.999999);
    o.beta2 = r.get_double("beta2", 0.95, 0.0, 0.999999999);
    o.eps = r.get_double("eps", 1e-8, 0.0, 1.0);
    o.weight_decay = r.get_double("weight_decay", 0.0, 0.0, 10.0);
    o.decay_norms_and_embeddings = r.get_bool("decay_norms_and_embeddings", false);
    o.grad_clip = r.get_double("grad_clip", 1.0, 0.0, 1e9);
    JsonReader s = r.child("schedule");
    ScheduleConfig& sc = o.schedule;
    sc.type = s.get_string("type", "cosine", {"constant", "cosine", "wsd-sqrt", "wsd-linear"});
    sc.warmup_steps = s.get_int("warmup_steps", 0, 0, kBig);
    const bool wsd = sc.type.starts_with("wsd");
    sc.decay_steps = s.get_int("decay_steps", wsd ? std::optional<int64_t>() : 0, 0, c.train.steps);
    if (wsd && sc.warmup_steps + sc.decay_steps > c.train.steps)
      s.error("decay_steps", str("warmup_steps + decay_steps (", sc.warmup_steps + sc.decay_steps,
                                 ") exceeds train.steps (", c.train.steps, ")"));
    if (!wsd && s.has("decay_steps") && sc.decay_steps != 0)
      s.error("decay_steps", "only applies to the wsd schedules");
    sc.min_lr_ratio = s.get_double("min_lr_ratio", 0.0, 0.0, 1.0);
    s.finish();
    r.finish();
  }
  {
    JsonReader r = root.child("data");
    c.data.train = r.get_string("train", std::nullopt);
    c.data.val = r.get_string("val", "");
    c.data.tokenizer = r.get_string("tokenizer", "byte");
    if (c.data.train.empty()) r.error("train", "must name shard files, a directory or a glob");
    r.finish();
  }
  {
    JsonReader r = root.child("precision");
    c.precision.master_weights = r.get_bool("master_weights", true);
    c.precision.optim_state_dtype = r.get_string("optim_state_dtype", "fp32", {"fp32", "bf16"});
    r.finish();
  }
  {
    JsonReader r = root.child("diloco");
    DilocoConfig& d = c.diloco;
    d.inner_steps = r.get_int("inner_steps", 100, 1, kBig);
    d.outer_lr = r.get_double("outer_lr", 0.7, 0.0, 100.0);
    d.outer_momentum = r.get_double("outer_momentum", 0.9, 0.0, 0.999999);
    d.nesterov = r.get_bool("nesterov", true);
    d.compression = r.get_string("compression", "int8", {"none", "int8"});
    r.finish();
  }
  root.finish();
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  json doc;
  std::string source = path.empty() ? std::string("<embedded default config>") : path;
  const std::string text = path.empty() ? std::string(kDefaultConfigJson) : read_text_file(path);
  try {
    doc = json::parse(text, nullptr, true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    fail(source, ": not valid JSON: ", e.what());
  }
  for (const std::string& o : overrides) apply_override(doc, o);
  if (!overrides.empty()) source += " (with --set overrides)";
  return parse_config(doc, source);
}

}  // namespace intellect
