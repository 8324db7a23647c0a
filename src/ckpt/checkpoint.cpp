#include "ckpt/checkpoint.h"

#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "ckpt/safetensors.h"
#include "model/layout.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json_reader.h"

namespace intellect {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kOuterFile = "outer.safetensors";
constexpr const char* kInFlightFile = "outer_in_flight.safetensors";
constexpr const char* kErrorFeedbackFile = "error_feedback.safetensors";
constexpr const char* kManifestFile = "manifest.json";
constexpr const char* kCompleteFile = "COMPLETE";

// Fault injection for the atomicity tests: INTELLECT_CKPT_TEST_CRASH names a
// point in the write at which the process dies as if killed.
void crash_point(const char* where) {
  const char* at = std::getenv("INTELLECT_CKPT_TEST_CRASH");
  if (at && std::strcmp(at, where) == 0) std::_Exit(86);
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}

// BLAKE2b-256 (libsodium's generichash) over everything written or read.
class Hasher {
 public:
  Hasher() {
    if (sodium_init() < 0) fail("libsodium failed to initialise");
    crypto_generichash_init(&st_, nullptr, 0, 32);
  }
  void update(const void* p, size_t n) {
    crypto_generichash_update(&st_, static_cast<const unsigned char*>(p), n);
    bytes_ += n;
  }
  std::string hex_digest() {
    unsigned char out[32];
    crypto_generichash_final(&st_, out, 32);
    return hex(out, 32);
  }
  uint64_t bytes() const { return bytes_; }

 private:
  crypto_generichash_state st_;
  uint64_t bytes_ = 0;
};

struct FileRecord {
  uint64_t bytes;
  std::string blake2b;
};

// A safetensors file whose data section is written straight from flat
// buffers: the tensors are contiguous ranges of them, in layout order, so no
// copy of the (possibly tens of GB of) state is made.
struct FlatTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
  size_t numel;
};

FileRecord write_flat_safetensors(const std::string& path, const std::vector<FlatTensor>& tensors,
                                  const json& metadata) {
  json header = json::object();
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const FlatTensor& t : tensors) {
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 4 * t.numel}}};
    offset += 4 * t.numel;
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // data starts 8-byte aligned
  const uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  AtomicFile f(path);
  Hasher h;
  f.write(len, 8);
  h.update(len, 8);
  f.write(text.data(), text.size());
  h.update(text.data(), text.size());
  for (const FlatTensor& t : tensors) {
    // In pieces, so the hash stays in cache with the data it reads.
    const char* p = reinterpret_cast<const char*>(t.data);
    size_t left = 4 * t.numel;
    while (left > 0) {
      const size_t chunk = std::min<size_t>(left, size_t(64) << 20);
      f.write(p, chunk);
      h.update(p, chunk);
      p += chunk;
      left -= chunk;
    }
  }
  f.commit();
  return {h.bytes(), h.hex_digest()};
}

FileRecord copy_file_hashed(const std::string& from, const std::string& to) {
  const std::vector<uint8_t> bytes = read_file(from);
  Hasher h;
  h.update(bytes.data(), bytes.size());
  write_file_atomic(to, bytes.data(), bytes.size());
  return {bytes.size(), h.hex_digest()};
}

FileRecord hash_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot open '", path, "'");
  Hasher h;
  std::vector<char> buf(size_t(16) << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (f.gcount() > 0) h.update(buf.data(), static_cast<size_t>(f.gcount()));
  }
  return {h.bytes(), h.hex_digest()};
}

ModelConfig model_from_config_json(const json& config, const std::string& where) {
  if (!config.is_object() || !config.contains("model"))
    fail(where, ": the manifest's config has no \"model\" block");
  JsonReader r(config["model"], where + " (manifest config)", "model");
  ModelConfig m = ModelConfig::from_json(r);
  r.finish();
  return m;
}

std::vector<FlatTensor> model_tensors(const ParamLayout& layout, const float* base,
                                      const std::string& prefix) {
  std::vector<FlatTensor> t;
  for (const ParamEntry& e : layout.entries())
    t.push_back({prefix + e.name, e.shape, base + e.offset, e.numel});
  return t;
}

// Reads the tensors of `layout` (with name prefix) from a checkpoint file into
// flat, refusing missing, extra or misshapen tensors.
void read_flat(const st::File& f, const ParamLayout& layout, const std::string& prefix, float* flat,
               const std::string& ckpt) {
  size_t expected = 0;
  for (const ParamEntry& e : layout.entries()) {
    const st::TensorInfo* t = f.find(prefix + e.name);
    if (!t)
      fail(ckpt, ": ", fs::path(f.path()).filename().string(), " has no tensor '", prefix + e.name,
           "': the checkpoint was written for a different model");
    if (t->shape != e.shape)
      fail(ckpt, ": tensor '", prefix + e.name, "' has shape ", st::shape_str(t->shape),
           " but the model config gives ", st::shape_str(e.shape));
    const std::vector<float> v = f.read_f32(prefix + e.name);
    std::memcpy(flat + e.offset, v.data(), sizeof(float) * e.numel);
    ++expected;
  }
  if (f.tensors().size() != expected)
    fail(ckpt, ": ", fs::path(f.path()).filename().string(), " holds ", f.tensors().size(),
         " tensors, the model has ", expected);
}

bool is_step_dir_name(const std::string& name) {
  if (name.size() != 13 || name.rfind("step_", 0) != 0) return false;
  return std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::string write_checkpoint(const std::string& root, const CheckpointState& s) {
  const ModelConfig mc = model_from_config_json(s.config, "checkpoint state");
  const ParamLayout layout(mc);
  const size_t P = layout.total();
  if (s.params.size() != P)
    fail("checkpoint: ", s.params.size(), " parameters given, the model has ", P);
  const bool with_opt = !s.exp_avg.empty();
  if (with_opt && (s.exp_avg.size() != P || s.exp_avg_sq.size() != P))
    fail("checkpoint: optimizer state has ", s.exp_avg.size(), "/", s.exp_avg_sq.size(),
         " values, the model has ", P, " parameters");

  make_dirs(root);
  const std::string name = checkpoint_dir_name(s.step);
  const std::string final_dir = root + "/" + name, partial = root + "/." + name + ".partial";
  if (path_exists(final_dir + "/" + kCompleteFile))
    fail("checkpoint ", final_dir, " already exists and is complete; not overwriting it");
  std::error_code ec;
  fs::remove_all(partial, ec);
  fs::remove_all(final_dir, ec);  // an incomplete one from a writer that died
  make_dirs(partial);

  json files = json::object();
  const json meta = {{"format", kCheckpointFormat}, {"step", std::to_string(s.step)}};
  FileRecord r = write_flat_safetensors(partial + "/" + kModelFile, model_tensors(layout, s.params.data(), ""),
                                        meta);
  files[kModelFile] = {{"bytes", r.bytes}, {"blake2b", r.blake2b}};
  crash_point("after_model");
  if (with_opt) {
    std::vector<FlatTensor> t = model_tensors(layout, s.exp_avg.data(), "exp_avg.");
    const std::vector<FlatTensor> t2 = model_tensors(layout, s.exp_avg_sq.data(), "exp_avg_sq.");
    t.insert(t.end(), t2.begin(), t2.end());
    r = write_flat_safetensors(partial + "/" + kOptimizerFile, t, meta);
    files[kOptimizerFile] = {{"bytes", r.bytes}, {"blake2b", r.blake2b}};
  }
  if (!s.outer.empty()) {
    if (s.outer.size() != P || s.outer_momentum.size() != P)
      fail("checkpoint: DiLoCo state has ", s.outer.size(), "/", s.outer_momentum.size(), " values, the model has ", P);
    std::vector<FlatTensor> t = model_tensors(layout, s.outer.data(), "outer.");
    const std::vector<FlatTensor> t2 = model_tensors(layout, s.outer_momentum.data(), "outer_momentum.");
    t.insert(t.end(), t2.begin(), t2.end());
    r = write_flat_safetensors(partial + "/" + kOuterFile, t, meta);
    files[kOuterFile] = {{"bytes", r.bytes}, {"blake2b", r.blake2b}};
  }
  if (s.outer_in_flight_step > 0) {
    if (s.outer.empty() || s.outer_in_flight.size() != P)
      fail("checkpoint: DiLoCo round in flight has ", s.outer_in_flight.size(), " values (and ", s.outer.size(),
           " outer parameters), the model has ", P);
    r = write_flat_safetensors(partial + "/" + kInFlightFile, model_tensors(layout, s.outer_in_flight.data(), "in_flight."),
                               meta);
    files[kInFlightFile] = {{"bytes", r.bytes}, {"blake2b", r.blake2b}};
  }
  if (!s.error_feedback.empty()) {
    if (s.outer.empty() || s.error_feedback.size() != P)
      fail("checkpoint: the error-feedback buffer has ", s.error_feedback.size(), " values (and ", s.outer.size(),
           " outer parameters), the model has ", P);
    r = write_flat_safetensors(partial + "/" + kErrorFeedbackFile,
                               model_tensors(layout, s.error_feedback.data(), "error_feedback."), meta);
    files[kErrorFeedbackFile] = {{"bytes", r.bytes}, {"blake2b", r.blake2b}};
  }
  if (!s.tokenizer_files.empty()) {
    make_dirs(partial + "/tokenizer");
    for (const std::string& src : s.tokenizer_files) {
      const std::string rel = "tokenizer/" + fs::path(src).filename().string();
      r = copy_file_hashed(src, partial + "/" + rel);
      files[rel] = {{"bytes", r.bytes}, {"blake2b", r.blake2b}};
    }
    fsync_dir(partial + "/tokenizer");
  }
  const json manifest = {{"format", kCheckpointFormat},
                         {"version", kCheckpointVersion},
                         {"step", s.step},
                         {"config", s.config},
                         {"optimizer", with_opt ? json{{"type", "adamw"}, {"step", s.optimizer_step}} : json(nullptr)},
                         {"data_position", s.data_position},
                         {"rng", s.rng},
                         {"schedule", s.schedule},
                         {"outer_in_flight_step", s.outer_in_flight_step},
                         {"outer_in_flight_standin_scale", s.outer_in_flight_standin_scale},
                         {"files", files}};
  const std::string text = manifest.dump(2) + "\n";
  write_file_atomic(partial + "/" + kManifestFile, text.data(), text.size());
  fsync_dir(partial);
  crash_point("before_rename");
  fs::rename(partial, final_dir, ec);
  if (ec) fail("cannot rename '", partial, "' to '", final_dir, "': ", ec.message());
  fsync_dir(root);
  crash_point("before_marker");
  const std::string marker = "complete\n";
  write_file_atomic(final_dir + "/" + kCompleteFile, marker.data(), marker.size());
  return final_dir;
}

ModelConfig checkpoint_model_config(const std::string& dir) {
  const std::string path = dir + "/" + kManifestFile;
  if (!path_exists(path)) fail(dir, ": not a checkpoint (no ", kManifestFile, ")");
  json m;
  try {
    m = json::parse(read_text_file(path));
  } catch (const json::parse_error& e) {
    fail(path, ": not valid JSON (", e.what(), "): the checkpoint is corrupted");
  }
  if (!m.is_object() || m.value("format", "") != kCheckpointFormat)
    fail(path, ": not an intellect checkpoint manifest");
  return model_from_config_json(m["config"], dir);
}

CheckpointState read_checkpoint(const std::string& dir, bool with_optimizer) {
  if (!fs::is_directory(dir)) fail("checkpoint '", dir, "' does not exist or is not a directory");
  if (!path_exists(dir + "/" + kCompleteFile))
    fail(dir, ": incomplete checkpoint (no ", kCompleteFile,
         " marker): its writer stopped before finishing; use an earlier one");
  const std::string mpath = dir + "/" + kManifestFile;
  json m;
  try {
    m = json::parse(read_text_file(mpath));
  } catch (const json::parse_error& e) {
    fail(mpath, ": not valid JSON (", e.what(), "): the checkpoint is corrupted");
  } catch (const Error& e) {
    fail(dir, ": cannot read the manifest: ", e.what());
  }
  if (!m.is_object() || m.value("format", "") != kCheckpointFormat)
    fail(mpath, ": not an intellect checkpoint manifest");
  if (m.value("version", 0) != kCheckpointVersion)
    fail(mpath, ": checkpoint format version ", m.value("version", 0), ", this build reads version ",
         kCheckpointVersion);
  if (!m.contains("files") || !m["files"].is_object()) fail(mpath, ": no file list");
  // Every file the manifest lists must be there, whole, with its checksum.
  for (auto& [name, rec] : m["files"].items()) {
    const std::string path = dir + "/" + name;
    if (name.find("..") != std::string::npos) fail(mpath, ": file name '", name, "' leaves the checkpoint");
    if (!path_exists(path)) fail(dir, ": file '", name, "' listed in the manifest is missing");
    const uint64_t want = rec.value("bytes", uint64_t(0));
    const uint64_t got = fs::file_size(path);
    if (got != want)
      fail(dir, ": '", name, "' is ", got, " bytes, the manifest says ", want, " (truncated or overwritten)");
    if (hash_file(path).blake2b != rec.value("blake2b", std::string()))
      fail(dir, ": '", name, "' does not match its checksum: the file is corrupted");
  }
  if (!m["files"].contains(kModelFile)) fail(mpath, ": the manifest lists no ", kModelFile);

  CheckpointState s;
  s.step = m.value("step", int64_t(0));
  s.config = m["config"];
  const ModelConfig mc = model_from_config_json(s.config, dir);
  const ParamLayout layout(mc);
  s.params.resize(layout.total());
  read_flat(st::File::open(dir + "/" + kModelFile), layout, "", s.params.data(), dir);
  // A file of two flat sets of the model's tensors, with name prefixes.
  auto read_pair = [&](const char* file, const std::string& p1, std::vector<float>& a, const std::string& p2,
                       std::vector<float>& b) {
    const st::File f = st::File::open(dir + "/" + file);
    a.resize(layout.total());
    b.resize(layout.total());
    const size_t expected = 2 * layout.entries().size();
    if (f.tensors().size() != expected)
      fail(dir, ": ", file, " holds ", f.tensors().size(), " tensors, expected ", expected);
    for (const ParamEntry& e : layout.entries())
      for (const auto& [prefix, flat] : {std::pair<std::string, float*>{p1, a.data()}, {p2, b.data()}}) {
        const st::TensorInfo* t = f.find(prefix + e.name);
        if (!t || t->shape != e.shape)
          fail(dir, ": ", file, " lacks '", prefix + e.name, "' with shape ", st::shape_str(e.shape));
        const std::vector<float> v = f.read_f32(prefix + e.name);
        std::memcpy(flat + e.offset, v.data(), sizeof(float) * e.numel);
      }
  };
  if (with_optimizer && m["files"].contains(kOptimizerFile)) {
    read_pair(kOptimizerFile, "exp_avg.", s.exp_avg, "exp_avg_sq.", s.exp_avg_sq);
    s.optimizer_step = m["optimizer"].is_object() ? m["optimizer"].value("step", int64_t(0)) : 0;
  }
  if (with_optimizer && m["files"].contains(kOuterFile))
    read_pair(kOuterFile, "outer.", s.outer, "outer_momentum.", s.outer_momentum);
  if (with_optimizer && m["files"].contains(kInFlightFile)) {
    const int64_t k = m.value("outer_in_flight_step", int64_t(0));
    if (k <= 0 || s.outer.empty())
      fail(dir, ": holds a DiLoCo round in flight but ", k <= 0 ? "no outer step for it" : "no outer state",
           " (manifest outer_in_flight_step)");
    s.outer_in_flight.resize(layout.total());
    read_flat(st::File::open(dir + "/" + kInFlightFile), layout, "in_flight.", s.outer_in_flight.data(), dir);
    s.outer_in_flight_step = k;
    const double scale = m.value("outer_in_flight_standin_scale", 1.0);
    if (!(scale >= 0.0 && scale <= 1.0))
      fail(dir, ": manifest outer_in_flight_standin_scale is ", scale, "; it must be in [0, 1] (a damaged or "
                "hand-edited manifest: restore it, or resume from an earlier checkpoint)");
    s.outer_in_flight_standin_scale = static_cast<float>(scale);
  }
  if (with_optimizer && m["files"].contains(kErrorFeedbackFile)) {
    if (s.outer.empty()) fail(dir, ": holds an error-feedback buffer but no DiLoCo outer state");
    s.error_feedback.resize(layout.total());
    read_flat(st::File::open(dir + "/" + kErrorFeedbackFile), layout, "error_feedback.", s.error_feedback.data(), dir);
  }
  s.data_position = m.value("data_position", json(nullptr));
  s.rng = m.value("rng", json(nullptr));
  s.schedule = m.value("schedule", json(nullptr));
  for (auto& [name, rec] : m["files"].items())
    if (name.rfind("tokenizer/", 0) == 0) s.tokenizer_files.push_back(dir + "/" + name);
  return s;
}

std::vector<std::string> list_checkpoints(const std::string& root) {
  std::vector<std::string> dirs;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return dirs;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && is_step_dir_name(e.path().filename().string())) dirs.push_back(e.path().string());
  std::sort(dirs.rbegin(), dirs.rend());  // zero-padded names: newest first
  return dirs;
}

FoundCheckpoint find_newest_checkpoint(const std::string& root, bool with_optimizer,
                                       const std::function<void(const std::string&)>& report,
                                       const std::function<void(const CheckpointState&)>& accept) {
  for (const std::string& dir : list_checkpoints(root)) {
    try {
      CheckpointState s = read_checkpoint(dir, with_optimizer);
      if (accept) accept(s);
      return {dir, std::move(s)};
    } catch (const std::exception& e) {  // malformed manifests raise JSON and filesystem errors too
      if (report) report(str("skipping ", dir, ": ", e.what()));
    }
  }
  return {};
}

std::string newest_valid_checkpoint(const std::string& root,
                                    const std::function<void(const std::string&)>& report,
                                    const std::function<void(const CheckpointState&)>& accept) {
  return find_newest_checkpoint(root, true, report, accept).dir;
}

void prune_checkpoints(const std::string& root, int64_t keep) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() > 9 && n[0] == '.' && n.ends_with(".partial")) fs::remove_all(e.path(), ec);
  }
  int64_t kept = 0;
  for (const std::string& dir : list_checkpoints(root)) {
    if (!path_exists(dir + "/" + kCompleteFile)) continue;  // the resume path reports these
    if (++kept > keep) fs::remove_all(dir, ec);
  }
}

}  // namespace intellect
