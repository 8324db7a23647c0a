#include "train/config.h"

#include "default_config.h"
#include "dist/control.h"
#include "dist/link_emulation.h"
#include "status/status_server.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json_reader.h"

namespace intellect {

using nlohmann::json;

namespace {

// An HTTP listen setting ("PORT" or "IPV4:PORT"; a bare port may be a JSON
// number, as --set k=8080 gives), checked now rather than when the server starts.
std::string http_listen(JsonReader& r, const std::string& key) {
  std::string value = r.has(key) && r.get_json(key).is_number_unsigned()
                          ? std::to_string(r.get_json(key).get<uint64_t>())
                          : r.get_string(key, "");
  if (value.empty()) return value;
  try {
    parse_http_listen(value, r.field(key));
  } catch (const Error& e) {
    r.error(key, e.what());
  }
  return value;
}

// data.train / data.val: a path string (one dataset, named after the split),
// or a list of {"name", "path", "weight"} objects. An empty string or null
// for the optional val means none.
std::vector<DataSource> read_sources(JsonReader& r, const std::string& key, const std::string& source,
                                     bool required) {
  if (!required && (!r.has(key) || r.is_null(key))) {
    r.get_json(key);  // marks it as known when present
    return {};
  }
  const json& v = r.get_json(key);
  if (v.is_string()) {
    const std::string path = v.get<std::string>();
    if (path.empty()) {
      if (!required) return {};
      r.error(key, "must name shard files, a directory or a glob");
    }
    return {{key, path, 1.0}};
  }
  if (!v.is_array())
    r.error(key, str("expected a path (shard file, directory or glob) or a list of {\"name\", \"path\", "
                     "\"weight\"} datasets, got ", v.dump()));
  if (v.empty())
    r.error(key, "is an empty mixture: list at least one {\"name\", \"path\", \"weight\"} dataset");
  std::vector<DataSource> out;
  for (size_t i = 0; i < v.size(); ++i) {
    JsonReader e(v[i], source, r.field(key) + "[" + std::to_string(i) + "]");
    DataSource d;
    d.name = e.get_string("name", std::nullopt);
    if (d.name.empty()) e.error("name", "must not be empty");
    for (const DataSource& other : out)
      if (other.name == d.name) e.error("name", str("\"", d.name, "\" is used by two datasets; names must be unique"));
    d.path = e.get_string("path", std::nullopt);
    if (d.path.empty()) e.error("path", "must name shard files, a directory or a glob");
    d.weight = e.get_double("weight", std::nullopt, -1e300, 1e300);
    if (!(d.weight > 0.0))
      e.error("weight", str("must be positive (weights are relative shares), got ", d.weight));
    e.finish();
    out.push_back(std::move(d));
  }
  return out;
}

constexpr int64_t kBig = int64_t(1) << 40;  // "no practical limit" for counts and steps

// train: steps, batches, evaluation, attention, GPUs, the recompute plan, outputs.
void read_train(JsonReader r, Config& c) {
  TrainConfig& t = c.train;
  t.device = r.get_string("device", "cpu", {"cpu", "cuda"});
  t.seed = static_cast<uint64_t>(r.get_int("seed", 1, 0, kBig));
  t.steps = r.get_int("steps", std::nullopt, 1, kBig);
  t.stop_after_steps = r.get_int("stop_after_steps", 0, 0, kBig);
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
  // Documents are found by their BOS token, so masking defaults to on exactly when there is one.
  t.doc_masking = r.get_bool("doc_masking", c.model.bos_id >= 0);
  if (t.doc_masking && c.model.bos_id < 0)
    r.error("doc_masking", "is true but model.bos_id is -1: document boundaries come from the BOS token; "
                           "set model.bos_id, or train.doc_masking to false");
  t.gpus = r.get_int("gpus", 1, 0, 64);
  if (t.gpus != 1 && t.device != "cuda")
    r.error("gpus", str("sharding over several GPUs needs train.device \"cuda\", got gpus=", t.gpus,
                        " with device \"", t.device, "\""));
  // recompute: "auto", "none", "ops", "all", or a list of blocks to recompute fully.
  t.recompute = RecomputeSpec{};
  const json v = r.has("recompute") ? r.get_json("recompute") : json("auto");
  const auto all = [&](Recompute level) {
    t.recompute.automatic = false;
    t.recompute.blocks.assign(c.model.n_layers, level);
  };
  if (v.is_string()) {
    const std::string mode = r.get_string("recompute", "auto", {"auto", "none", "ops", "all"});
    if (mode == "none") all(Recompute::none);
    if (mode == "ops") all(Recompute::ops);
    if (mode == "all") all(Recompute::full);
  } else if (v.is_array()) {
    all(Recompute::none);
    for (const json& e : v) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= c.model.n_layers)
        r.error("recompute", str("block indices must be integers in [0, ", c.model.n_layers,
                                 "), got ", e.dump()));
      t.recompute.blocks[e.get<int64_t>()] = Recompute::full;
    }
  } else {
    r.error("recompute", str("expected \"auto\", \"none\", \"ops\", \"all\" or a list of block indices, got ",
                             v.dump()));
  }
  t.memory_limit_gib = r.get_double("memory_limit_gib", 0.0, 0.0, 1e6);
  t.out_dir = r.get_string("out_dir", "runs/default");
  t.metrics_file = r.get_string("metrics_file", "");
  t.metrics_listen = http_listen(r, "metrics_listen");
  t.metrics_token_file = r.get_string("metrics_token_file", "");
  if (t.out_dir.empty()) r.error("out_dir", "must not be empty");
  r.finish();
}

// optim: AdamW and the learning-rate schedule (which may not outlast train.steps).
void read_optim(JsonReader r, Config& c) {
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

// data: the datasets, the tokenizer, this node's partition.
void read_data(JsonReader r, Config& c, const std::string& source) {
  DataConfig& d = c.data;
  d.train = read_sources(r, "train", source, true);
  d.val = read_sources(r, "val", source, false);
  d.tokenizer = r.get_string("tokenizer", "byte");
  d.seed = static_cast<uint64_t>(r.get_int("seed", static_cast<int64_t>(c.train.seed), 0, kBig));
  d.node_count = r.get_int("node_count", 1, 1, kBig);
  d.node_rank = r.get_int("node_rank", 0, 0, kBig);
  if (d.node_rank >= d.node_count)
    r.error("node_rank", str("must be below data.node_count (", d.node_count, "), got ", d.node_rank));
  d.partitions = r.get_int("partitions", d.node_count, 1, kBig);
  if (d.partitions < d.node_count)
    r.error("partitions", str("must be at least data.node_count (", d.node_count, ") so that every node "
                              "owns a partition of its own, got ", d.partitions));
  d.partition = r.get_int("partition", d.node_rank, 0, kBig);
  if (d.partition >= d.partitions)
    r.error("partition", str("must be below data.partitions (", d.partitions, "), got ", d.partition));
  d.prefetch = r.get_int("prefetch", 2, 0, 64);
  r.finish();
}

// precision: master weights and the dtypes of optimizer state and gradients.
void read_precision(JsonReader r, Config& c) {
  c.precision.master_weights = r.get_bool("master_weights", true);
  c.precision.optim_state_dtype = r.get_string("optim_state_dtype", "fp32", {"fp32", "bf16"});
  c.precision.grad_reduce_dtype = r.get_string("grad_reduce_dtype", "fp32", {"fp32", "bf16"});
  c.precision.grad_dtype = r.get_string("grad_dtype", "auto", {"auto", "fp32", "bf16"});
  c.precision.matmul = r.get_string("matmul", "bf16", {"bf16", "fp8"});
  if (c.precision.matmul == "fp8" && c.train.device != "cuda")
    r.error("matmul", "\"fp8\" runs on the CUDA backend (Hopper GEMMs); train.device is \"" + c.train.device +
                          "\", whose fp32 products are the reference: set train.device to \"cuda\" or matmul to \"bf16\"");
  c.precision.fp8_weight_gradients = r.get_bool("fp8_weight_gradients", false);
  if (c.precision.fp8_weight_gradients && c.precision.matmul != "fp8")
    r.error("fp8_weight_gradients", "is true but matmul is \"" + c.precision.matmul +
                                        "\": FP8 weight gradients go with FP8 linear layers; set matmul to \"fp8\"");
  c.precision.fp8_classifier = r.get_bool("fp8_classifier", false);
  if (c.precision.fp8_classifier && c.precision.matmul != "fp8")
    r.error("fp8_classifier", "is true but matmul is \"" + c.precision.matmul +
                                  "\": an FP8 classifier goes with FP8 linear layers; set matmul to \"fp8\"");
  if (c.precision.fp8_classifier && c.model.vocab_size % 16 != 0)
    r.error("fp8_classifier", str("is true but model.vocab_size is ", c.model.vocab_size,
                                  ", not a multiple of 16 (cuBLASLt's FP8 kernels); pad the vocabulary (extra "
                                  "ids are never targets) or set fp8_classifier to false"));
  r.finish();
}

// ckpt: where and how often to save, and what to start from.
void read_ckpt(JsonReader r, Config& c) {
  CheckpointConfig& k = c.ckpt;
  k.dir = r.get_string("dir", c.train.out_dir + "/checkpoints");
  k.every = r.get_int("every", 0, 0, kBig);
  k.keep = r.get_int("keep", 3, 1, 1000000);
  k.save_final = r.get_bool("save_final", true);
  k.resume = r.get_string("resume", "none");
  k.init_from = r.get_string("init_from", "");
  if (k.dir.empty()) r.error("dir", "must not be empty");
  if (k.resume.empty()) r.error("resume", "must be \"none\", \"auto\" or a checkpoint step directory");
  if (k.resume != "none" && !k.init_from.empty())
    r.error("init_from", "cannot be combined with ckpt.resume: a resumed run already has its weights");
  r.finish();
}

// diloco: the outer step, the compression of pseudo-gradients and overlap.
void read_diloco(JsonReader r, Config& c) {
  DilocoConfig& d = c.diloco;
  d.enabled = r.get_bool("enabled", false);
  d.inner_steps = r.get_int("inner_steps", 100, 1, kBig);
  d.compression = r.get_string("compression", "int8", {"none", "int8", "int4", "sparse", "blocks4", "blocks2"});
  const bool sparse = d.compression == "sparse", blocks = d.rotates_blocks();
  // Sparse runs SparseLoCo's recipe unless told otherwise: the decayed
  // error-feedback buffer replaces outer momentum, and the outer step is
  // plain SGD (docs/ARCHITECTURE.md, "What SparseLoCo does"). blocks4
  // (and blocks2) average plainly too (no momentum: blocks4 at outer lr 1, each
  // averaged block becomes the mean of the nodes' copies; Nesterov was +6.2%
  // against plain averaging's −1.7% of fp32 on the CPU check,
  // docs/PERFORMANCE.md); blocks2 steps past the mean (kBlocks2OuterLr).
  // Every other compression keeps DiLoCo's Nesterov outer step.
  const bool plain = sparse || blocks;
  const double default_outer_lr =
      d.compression == "blocks2" ? kBlocks2OuterLr : plain ? kSparseOuterLr : 0.7;
  d.outer_lr = r.get_double("outer_lr", default_outer_lr, 0.0, 100.0);
  d.outer_momentum = r.get_double("outer_momentum", plain ? 0.0 : 0.9, 0.0, 0.999999);
  d.nesterov = r.get_bool("nesterov", d.outer_momentum > 0.0);
  if (d.nesterov && d.outer_momentum == 0.0)
    r.error("nesterov", "is true with diloco.outer_momentum 0: Nesterov needs momentum (set outer_momentum > 0, "
                        "or nesterov false)");
  d.sparse_density = r.get_double("sparse_density", 0.01, 1.0 / 4096, 1.0);
  if (!sparse && !blocks && r.has("error_feedback_decay"))
    r.error("error_feedback_decay", str("applies only to diloco.compression \"sparse\", \"blocks4\" and \"blocks2\" "
                                        "(the ones with an error-feedback buffer), and compression is \"",
                                        d.compression, "\": remove the key or set compression sparse, blocks4 or blocks2"));
  d.error_feedback_decay = r.get_double("error_feedback_decay",
                                        blocks ? kBlocksErrorFeedbackDecay : kSparseErrorFeedbackDecay, 0.0, 1.0);
  for (const char* key : {"block_fraction", "block_seed"})
    if (!blocks && r.has(key))
      r.error(key, str("applies only to diloco.compression \"blocks4\" and \"blocks2\", and compression is \"",
                       d.compression, "\": remove the key or set compression blocks4 or blocks2"));
  d.block_fraction =
      r.get_double("block_fraction", d.compression == "blocks2" ? kBlocks2Fraction : kBlocksFraction, 1e-6, 1.0);
  d.block_seed = static_cast<uint64_t>(r.get_int("block_seed", 0, 0, kBig));
  if (!sparse && r.has("sparse_aggregation"))
    r.error("sparse_aggregation", str("applies only to diloco.compression \"sparse\", and compression is \"",
                                      d.compression, "\": remove the key or set compression sparse"));
  d.sparse_aggregation = r.get_string("sparse_aggregation", "contributors", {"contributors", "mean"});
  d.rings = r.get_int("rings", 1, 1, 16);
  d.all_reduce = r.get_string("all_reduce", "ring", {"ring", "direct"});
  if (sparse && d.all_reduce == "direct")
    r.error("all_reduce", "is \"direct\", and diloco.compression \"sparse\" travels as an all-gather over the ring "
                          "(each node's top-k indices differ, so there is no segment to own): set all_reduce ring or "
                          "a dense compression");
  d.overlap = r.get_string("overlap", "none", {"none", "eager", "delayed"});
  if (blocks && d.overlap != "none")
    r.error("overlap", str("is \"", d.overlap, "\", and diloco.compression \"", d.compression, "\" runs without overlap "
                           "(its outer step keeps each node's progress on the blocks not sent, which the "
                           "overlapped boundary does not do yet): set overlap none or another compression"));
  if (d.overlap != "eager" && r.has("eager_standin"))
    r.error("eager_standin", str("applies only to diloco.overlap \"eager\", and overlap is \"", d.overlap,
                                 "\": remove the key or set overlap eager"));
  d.eager_standin = r.get_string("eager_standin", "own", {"own", "fitted"});
  if (d.overlap == "none" && r.has("apply_on_arrival"))
    r.error("apply_on_arrival", "applies only with diloco.overlap \"eager\" or \"delayed\" (without overlap "
                                "every average is applied at once): remove the key or set overlap");
  d.apply_on_arrival = r.get_bool("apply_on_arrival", false);
  if (d.overlap == "none" && r.has("apply_after_steps"))
    r.error("apply_after_steps", "applies only with diloco.overlap \"eager\" or \"delayed\" (without overlap "
                                 "every average is applied at once): remove the key or set overlap");
  d.apply_after_steps = r.get_int("apply_after_steps", 0, 0, kBig);
  if (d.apply_after_steps >= d.inner_steps)
    r.error("apply_after_steps", str("is ", d.apply_after_steps, ", and diloco.inner_steps is ", d.inner_steps,
                                     ": a round must be applied before the next boundary; use a value below ",
                                     d.inner_steps, " (or 0 to apply at the boundary)"));
  r.finish();
}

// mesh: the coordinator, keys, timeouts, state serving, test-only links and attacks.
void read_mesh(JsonReader r, Config& c) {
  MeshConfig& m = c.mesh;
  m.coordinator = r.get_string("coordinator", "");
  m.listen = r.get_string("listen", "127.0.0.1:0");
  m.name = r.get_string("name", "");
  m.secret_file = r.get_string("secret_file", "");
  m.node_key_file = r.get_string("node_key_file", "");
  m.allowlist_file = r.get_string("allowlist_file", "");
  if (!m.node_key_file.empty() && !m.secret_file.empty())
    r.error("secret_file", "is set together with mesh.node_key_file: a run uses node keys or a shared secret, "
                           "not both (keep only mesh.node_key_file for runs on the open internet)");
  if (!m.node_key_file.empty() && m.allowlist_file.empty())
    r.error("allowlist_file", "is required with mesh.node_key_file: the public keys this node accepts as peers");
  m.heartbeat_ms = r.get_int("heartbeat_ms", 2000, 10, 3600000);
  m.timeout_ms = r.get_int("timeout_ms", 6000, 20, 36000000);
  m.ready_timeout_ms = r.get_int("ready_timeout_ms", 30000, 0, 36000000);
  m.round_timeout_ms = r.get_int("round_timeout_ms", 600000, 100, 360000000);
  m.max_retries = r.get_int("max_retries", 3, 0, 1000);
  m.min_ring = r.get_int("min_ring", 1, 1, 100000);
  m.message_timeout_ms = r.get_int("message_timeout_ms", 60000, 100, 36000000);
  m.serve_state = r.get_bool("serve_state", true);
  m.state_lanes = r.get_int("state_lanes", 4, 1, 64);
  m.state_stripe_donors = r.get_int("state_stripe_donors", 3, 0, static_cast<int64_t>(control::kMaxStripeDonors));
  m.state_chunk_kib = r.get_int("state_chunk_kib", 4096, 16, 32768);
  m.emulate_link_mbit = r.get_double("emulate_link_mbit", 0.0, 0.0, 1e6);
  m.emulate_link_delay_ms = r.get_int("emulate_link_delay_ms", 0, 0, 60000);
  m.emulate_link_jitter_ms = r.get_int("emulate_link_jitter_ms", 0, 0, 60000);
  m.emulate_link_slow = r.get_string("emulate_link_slow", "");
  m.emulate_link_slow_mbit = r.get_double("emulate_link_slow_mbit", 0.0, 0.0, 1e6);
  if (!m.emulate_link_slow.empty()) {
    if (m.emulate_link_slow_mbit <= 0)
      r.error("emulate_link_slow_mbit", "must be above 0 with mesh.emulate_link_slow (the slow links' rate)");
    try {
      slow_peers_of("", m.emulate_link_slow, 1.0);  // the form, checked before any node starts
    } catch (const Error& e) {
      r.error("emulate_link_slow", e.what());
    }
  }
  m.order_rings_by_rate = r.get_bool("order_rings_by_rate", true);
  m.announce_norms = r.get_bool("announce_norms", true);
  m.norm_outlier_factor = r.get_double("norm_outlier_factor", 5.0, 0.0, 1e9);
  if (m.norm_outlier_factor > 0 && m.norm_outlier_factor < 1.5)
    r.error("norm_outlier_factor", str("must be 0 (off) or at least 1.5 (honest nodes' norms differ by that much), got ",
                                       m.norm_outlier_factor));
  m.attack_scale = r.get_double("attack_scale", 1.0, 1e-6, 1e9);
  m.attack_announce = r.get_double("attack_announce", 1.0, 1e-9, 1e9);
  m.attack_false_accusation = static_cast<int>(r.get_int("attack_false_accusation", 0, 0, 2));
  m.attack_alter_forwarded = static_cast<int>(r.get_int("attack_alter_forwarded", 0, 0, 2));
  m.status_listen = http_listen(r, "status_listen");
  m.status_token_file = r.get_string("status_token_file", "");
  if (m.emulate_link_jitter_ms > m.emulate_link_delay_ms)
    r.error("emulate_link_jitter_ms", str("must not exceed mesh.emulate_link_delay_ms (", m.emulate_link_delay_ms,
                                          "), got ", m.emulate_link_jitter_ms));
  if (m.timeout_ms <= m.heartbeat_ms)
    r.error("timeout_ms", str("must exceed mesh.heartbeat_ms (", m.heartbeat_ms, "), got ", m.timeout_ms));
  if (!m.coordinator.empty()) {
    if (!c.diloco.enabled) r.error("coordinator", "needs diloco.enabled = true: the mesh averages DiLoCo steps");
    if (m.secret_file.empty() && m.node_key_file.empty())
      r.error("node_key_file", "(or mesh.secret_file) is required with a coordinator: every connection is "
                               "authenticated; make a key with `intellect_keygen --out node.key`");
  }
  r.finish();
}

}  // namespace

Config parse_config(const json& doc, const std::string& source) {
  Config c;
  c.json = doc;
  c.source = source;
  JsonReader root(doc, source);

  {
    JsonReader r = root.child("model");
    c.model = ModelConfig::from_json(r);
    r.finish();
  }
  read_train(root.child("train"), c);
  read_optim(root.child("optim"), c);
  read_data(root.child("data"), c, source);
  read_precision(root.child("precision"), c);
  read_ckpt(root.child("ckpt"), c);
  read_diloco(root.child("diloco"), c);
  read_mesh(root.child("mesh"), c);
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

nlohmann::json run_settings(const Config& c) {
  const DilocoConfig& d = c.diloco;
  // Every diloco.* key: each one changes the outer step a node computes
  // from the same average, or the bytes it sends.
  const nlohmann::json diloco = {{"enabled", d.enabled},
                                 {"inner_steps", d.inner_steps},
                                 {"outer_lr", d.outer_lr},
                                 {"outer_momentum", d.outer_momentum},
                                 {"nesterov", d.nesterov},
                                 {"compression", d.compression},
                                 {"block_fraction", d.block_fraction},
                                 {"block_seed", d.block_seed},
                                 {"sparse_density", d.sparse_density},
                                 {"error_feedback_decay", d.error_feedback_decay},
                                 {"sparse_aggregation", d.sparse_aggregation},
                                 {"rings", d.rings},
                                 {"all_reduce", d.all_reduce},
                                 {"overlap", d.overlap},
                                 {"eager_standin", d.eager_standin},
                                 {"apply_on_arrival", d.apply_on_arrival},
                                 {"apply_after_steps", d.apply_after_steps}};
  return {{"model", c.model.to_json()}, {"diloco", diloco}};
}

}  // namespace intellect
