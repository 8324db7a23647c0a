#include "ckpt/hf_export.h"

#include <fcntl.h>  // AT_FDCWD
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc, _GNU_SOURCE)
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "ckpt/checkpoint.h"
#include "ckpt/hf_llama.h"
#include "ckpt/safetensors.h"
#include "model/layout.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json_reader.h"

namespace intellect {

using nlohmann::json;
namespace fs = std::filesystem;

// ---------------------------------------------------------------- sizes ------

uint64_t parse_byte_size(const std::string& text, const std::string& what) {
  const auto bad = [&](const std::string& why) -> uint64_t {
    fail(what, " '", text, "': ", why,
         " (expected a size such as 5GB, 500MB, 1.5GiB, 64KiB or a number of bytes)");
  };
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  const size_t num_begin = i;
  int dots = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    if (text[i] == '.') ++dots;
    ++i;
  }
  const std::string number = text.substr(num_begin, i - num_begin);
  if (number.empty() || number == "." || dots > 1) bad("no number");
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  std::string unit = text.substr(i);
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.back()))) unit.pop_back();
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // Decimal units are powers of 10 and binary ones powers of 2, as in
  // transformers, so "5GB" splits a checkpoint exactly where HF would.
  static const std::vector<std::pair<std::string, long double>> units = {
      {"", 1.0L},          {"b", 1.0L},          {"kb", 1e3L},         {"mb", 1e6L},
      {"gb", 1e9L},        {"tb", 1e12L},        {"kib", 1024.0L},     {"mib", 1048576.0L},
      {"gib", 1073741824.0L}, {"tib", 1099511627776.0L}};
  long double scale = 0.0L;
  for (const auto& [name, s] : units)
    if (unit == name) scale = s;
  if (scale == 0.0L) bad("unknown unit '" + unit + "'");
  const long double bytes = std::strtold(number.c_str(), nullptr) * scale;
  if (!(bytes >= 1.0L)) bad("must be at least one byte");
  if (bytes > 9.0e18L) bad("too large");
  return static_cast<uint64_t>(std::llround(static_cast<double>(bytes)));
}

std::string format_bytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  const char* names[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024.0;
  int u = 0;
  while (v >= 1024.0 && u < 3) v /= 1024.0, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, names[u]);
  return buf;
}

// ---------------------------------------------------------------- config -----

namespace {

json token_or_null(int64_t id) { return id >= 0 ? json(id) : json(nullptr); }

size_t dtype_bytes(HfDtype d) { return d == HfDtype::F32 ? 4 : 2; }

void write_json_file(const std::string& path, const json& j) {
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(path, text.data(), text.size());
}

std::string strip_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

json hf_config_json(const ModelConfig& c, HfDtype dtype) {
  json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.dim;
  j["intermediate_size"] = c.ffn_dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_seq_len;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == "llama3") {
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", c.rope_scaling.factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["torch_dtype"] = dtype == HfDtype::F32 ? "float32" : "bfloat16";
  // null rather than absent: LlamaConfig's defaults (1 and 2) would otherwise
  // give the model special tokens it never had.
  j["bos_token_id"] = token_or_null(c.bos_id);
  j["eos_token_id"] = token_or_null(c.eos_id);
  j["pad_token_id"] = nullptr;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["pretraining_tp"] = 1;
  j["initializer_range"] = c.init_std;
  j["use_cache"] = true;
  return j;
}

json hf_generation_config_json(const ModelConfig& c) {
  json j;
  if (c.bos_id >= 0) j["bos_token_id"] = c.bos_id;
  if (c.eos_id >= 0) j["eos_token_id"] = c.eos_id;
  j["do_sample"] = false;
  return j;
}

// ---------------------------------------------------------------- weights ----

std::vector<HfShard> plan_hf_shards(const ModelConfig& cfg, HfDtype dtype, uint64_t shard_size) {
  INTELLECT_CHECK(shard_size > 0);
  const ParamLayout layout(cfg);
  const std::vector<HfTensor> map = hf_tensor_map(cfg, layout);
  std::vector<HfShard> shards;
  for (size_t i = 0; i < map.size(); ++i) {
    const uint64_t bytes = static_cast<uint64_t>(map[i].numel) * dtype_bytes(dtype);
    if (shards.empty() || (!shards.back().tensors.empty() && shards.back().bytes + bytes > shard_size))
      shards.emplace_back();
    shards.back().tensors.push_back(i);
    shards.back().bytes += bytes;
  }
  const size_t n = shards.size();
  for (size_t s = 0; s < n; ++s) {
    if (n == 1) {
      shards[s].file = "model.safetensors";
    } else {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, n);
      shards[s].file = name;
    }
  }
  return shards;
}

std::vector<std::string> write_hf_weights(const std::string& dir, const ModelConfig& cfg,
                                          const std::vector<float>& params,
                                          const HfExportOptions& opt) {
  const ParamLayout layout(cfg);
  if (params.size() != layout.total())
    fail("export: the parameter buffer has ", params.size(), " values but the model config needs ",
         layout.total());
  const std::vector<HfTensor> map = hf_tensor_map(cfg, layout);
  const std::vector<HfShard> shards = plan_hf_shards(cfg, opt.dtype, opt.shard_size);

  size_t non_finite = 0;
  for (float v : params) non_finite += !std::isfinite(v);
  if (non_finite && opt.log)
    opt.log(str("warning: ", non_finite, " parameters are NaN or infinite; they are exported as they are"));

  std::vector<std::string> files;
  write_json_file(dir + "/config.json", hf_config_json(cfg, opt.dtype));
  files.push_back("config.json");
  write_json_file(dir + "/generation_config.json", hf_generation_config_json(cfg));
  files.push_back("generation_config.json");

  uint64_t total_bytes = 0;
  for (const HfShard& s : shards) total_bytes += s.bytes;
  json weight_map = json::object();
  uint64_t bytes_done = 0;
  size_t tensors_done = 0;
  for (size_t si = 0; si < shards.size(); ++si) {
    const HfShard& shard = shards[si];
    // One shard in memory at a time (the writer copies what it is given).
    st::Writer w;
    for (size_t ti : shard.tensors) {
      const HfTensor& t = map[ti];
      const float* data = params.data() + t.offset;
      if (opt.dtype == HfDtype::F32) w.add_f32(t.name, t.shape, data);
      else w.add_bf16_from_f32(t.name, t.shape, data);
      weight_map[t.name] = shard.file;
    }
    w.set_metadata("format", "pt");
    w.write(dir + "/" + shard.file);
    files.push_back(shard.file);
    bytes_done += shard.bytes;
    tensors_done += shard.tensors.size();
    if (opt.log)
      opt.log(str("wrote ", shard.file, ": ", shard.tensors.size(), " tensors, ",
                  format_bytes(shard.bytes), " (", tensors_done, "/", map.size(), " tensors, ",
                  format_bytes(bytes_done), " of ", format_bytes(total_bytes), ")"));
  }
  if (shards.size() > 1) {
    json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    write_json_file(dir + "/model.safetensors.index.json", index);
    files.push_back("model.safetensors.index.json");
  }
  return files;
}

// ---------------------------------------------------------------- export -----

ExportSource read_checkpoint_for_export(const std::string& path_in,
                                        const std::function<void(const std::string&)>& log) {
  const std::string path = strip_trailing_slashes(path_in);
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("checkpoint '", path, "' does not exist");
  if (!fs::is_directory(path, ec))
    fail("checkpoint '", path, "' is not a directory (expected a step directory such as "
         "ckpt/step_00001200, or the checkpoint root that holds them)");
  // A step directory has a manifest (read_checkpoint says what else is wrong
  // with it); a name like step_* is one too, even when its writer died early.
  if (fs::exists(path + "/manifest.json", ec) || fs::exists(path + "/COMPLETE", ec) ||
      fs::path(path).filename().string().starts_with("step_"))
    return {path, read_checkpoint(path, /*with_optimizer=*/false)};
  const std::vector<std::string> steps = list_checkpoints(path);
  if (steps.empty())
    fail("'", path, "' is not a checkpoint: it has no manifest.json (a step directory) and no "
         "step_* directories (a checkpoint root)");
  FoundCheckpoint found = find_newest_checkpoint(path, /*with_optimizer=*/false, log);
  if (!found.dir.empty()) return {found.dir, std::move(found.state)};
  fail("no valid checkpoint under '", path, "': none of its ", steps.size(),
       " step directories reads back cleanly (the reasons are above)");
}

namespace {

// Files the export writes itself; a tokenizer/ file of the same name is not copied.
bool is_export_output(const std::string& name) {
  return name == "config.json" || name == "generation_config.json" ||
         name == "model.safetensors.index.json" ||
         (name.starts_with("model") && name.ends_with(".safetensors"));
}

// The checkpoint's tokenizer files (read_checkpoint lists them, checksummed).
void copy_tokenizer_files(const std::vector<std::string>& sources, const std::string& out_dir,
                          std::vector<std::string>& files,
                          const std::function<void(const std::string&)>& log) {
  if (sources.empty()) {
    if (log) log("the checkpoint has no tokenizer files: the export has none either");
    return;
  }
  for (const std::string& src : sources) {
    const std::string name = fs::path(src).filename().string();
    if (is_export_output(name)) {
      if (log) log("not copying tokenizer/" + name + ": the export writes its own " + name);
      continue;
    }
    const std::vector<uint8_t> bytes = read_file(src);
    write_file_atomic(out_dir + "/" + name, bytes.data(), bytes.size());
    files.push_back(name);
  }
}

// Puts the finished `partial` directory at `out`. An absent or empty `out` is
// replaced by one rename; a full one (with --force) is swapped atomically with
// RENAME_EXCHANGE, so readers see the old directory or the new, never neither.
void publish_directory(const std::string& partial, const std::string& out) {
  std::error_code ec;
  fsync_dir(partial);
  const bool full = fs::exists(out, ec) && !fs::is_empty(out, ec);
  if (!full) {
    if (fs::exists(out, ec)) fs::remove(out, ec);  // empty: rename(2) would replace it anyway
    if (::rename(partial.c_str(), out.c_str()) != 0)
      fail("cannot rename '", partial, "' to '", out, "': ", std::strerror(errno));
  } else {
    if (::renameat2(AT_FDCWD, partial.c_str(), AT_FDCWD, out.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS)
        fail("cannot swap '", partial, "' with '", out, "': ", std::strerror(errno));
      // The filesystem cannot exchange: move the old one aside first.
      const std::string old = out + ".old." + std::to_string(::getpid());
      if (::rename(out.c_str(), old.c_str()) != 0)
        fail("cannot move the old '", out, "' aside to '", old, "': ", std::strerror(errno));
      if (::rename(partial.c_str(), out.c_str()) != 0)
        fail("cannot rename '", partial, "' to '", out, "' (the old output is in '", old,
             "'): ", std::strerror(errno));
      fs::remove_all(old, ec);
    } else {
      fs::remove_all(partial, ec);  // now holds the old output
    }
  }
  fsync_dir(fs::path(out).parent_path().string());
}

bool is_inside(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(inner, ec), b = fs::weakly_canonical(outer, ec);
  auto ai = a.begin();
  for (auto bi = b.begin(); bi != b.end(); ++bi, ++ai) {
    if (bi->empty()) continue;  // trailing separator
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

}  // namespace

HfExportResult export_checkpoint_to_hf(const std::string& ckpt, const std::string& out_in,
                                       const HfExportOptions& opt) {
  const std::string out = strip_trailing_slashes(out_in);
  if (out.empty()) fail("export: the output directory is empty");
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) fail("output '", out, "' exists and is not a directory");
    if (!fs::is_empty(out, ec) && !opt.force)
      fail("output '", out, "' already exists and is not empty; choose another directory, or pass "
           "--force to replace it");
  }
  // Refuse before reading what may be tens of GB.
  if (fs::exists(ckpt, ec) && is_inside(ckpt, out))
    fail("output '", out, "' contains the checkpoint '", ckpt,
         "'; writing there would destroy it: choose another directory");
  ExportSource src = read_checkpoint_for_export(ckpt, opt.log);
  HfExportResult r;
  r.checkpoint = src.dir;
  r.step = src.state.step;
  const ModelConfig cfg = checkpoint_model_config(r.checkpoint);
  const CheckpointState& state = src.state;
  if (opt.log)
    opt.log(str("read ", r.checkpoint, " (step ", state.step, ", ", state.params.size(),
                " parameters)"));

  // Build under <out>.partial; a leftover one is from an export that died.
  const std::string partial = out + ".partial";
  if (fs::exists(partial, ec)) {
    if (opt.log) opt.log("removing '" + partial + "', left by an earlier export that did not finish");
    fs::remove_all(partial, ec);
    if (ec) fail("cannot remove the leftover '", partial, "': ", ec.message());
  }
  if (!fs::path(out).parent_path().empty()) make_dirs(fs::path(out).parent_path().string());
  make_dirs(partial);
  try {
    r.files = write_hf_weights(partial, cfg, state.params, opt);
    copy_tokenizer_files(state.tokenizer_files, partial, r.files, opt.log);
    publish_directory(partial, out);
  } catch (...) {
    fs::remove_all(partial, ec);
    throw;
  }
  r.tensors = hf_tensor_map(cfg, ParamLayout(cfg)).size();
  for (const HfShard& s : plan_hf_shards(cfg, opt.dtype, opt.shard_size)) r.weight_bytes += s.bytes;
  return r;
}

// ---------------------------------------------------------------- import -----

const std::vector<std::string>& hf_tokenizer_file_names() {
  static const std::vector<std::string> names = {
      "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
      "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja"};
  return names;
}

std::string import_hf_to_checkpoint(const std::string& hf_dir_in, const std::string& root, int64_t step,
                                    const std::function<void(const std::string&)>& log) {
  const std::string hf_dir = strip_trailing_slashes(hf_dir_in);
  std::error_code ec;
  if (!fs::exists(hf_dir, ec)) fail("HuggingFace directory '", hf_dir, "' does not exist");
  if (!fs::is_directory(hf_dir, ec)) fail("'", hf_dir, "' is not a directory (expected a HuggingFace model directory)");
  if (step < 0) fail("--step must be 0 or more, got ", step);

  HfModel m = load_hf_model(hf_dir);
  // load_hf_model leaves init_std at its default; keep the model's own so that
  // an export of this checkpoint writes the same initializer_range back.
  const std::string cfg_path = hf_dir + "/config.json";
  const json hf = json::parse(read_text_file(cfg_path));
  if (hf.contains("initializer_range") && hf["initializer_range"].is_number())
    m.config.init_std = hf["initializer_range"].get<double>();

  // The trainer reads the config back through ModelConfig::from_json; refuse
  // now what it would refuse later.
  const json model_json = m.config.to_json();
  try {
    JsonReader r(model_json, cfg_path + " (converted)", "model");
    ModelConfig::from_json(r);
    r.finish();
  } catch (const Error& e) {
    fail(hf_dir, ": the model cannot be trained by intellect: ", e.what());
  }

  CheckpointState s;
  s.step = step;
  s.config = json{{"model", model_json}};
  s.params = std::move(m.params);
  for (const std::string& name : hf_tokenizer_file_names())
    if (fs::is_regular_file(hf_dir + "/" + name, ec)) s.tokenizer_files.push_back(hf_dir + "/" + name);
  if (log) {
    log(str("read ", hf_dir, ": ", s.params.size(), " parameters, ", m.config.n_layers, " layers, vocab ",
            m.config.vocab_size, m.config.tie_embeddings ? ", tied embeddings" : ""));
    if (s.tokenizer_files.empty()) log("no tokenizer files in " + hf_dir + "; the checkpoint has none");
  }
  make_dirs(root);
  return write_checkpoint(root, s);
}

}  // namespace intellect
