#include "train/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <utility>

#include "ckpt/async_checkpointer.h"
#include "ckpt/checkpoint.h"
#include "ckpt/hf_export.h"
#include "ckpt/safetensors.h"
#include "data/dataloader.h"
#include "data/prefetch.h"
#include "dist/mesh_node.h"
#include "dist/sparse.h"
#include "model/init.h"
#include "train/backend.h"
#include "train/data_setup.h"
#include "status/status_render.h"
#include "train/log.h"
#include "train/node_report.h"
#include "train/outer_sync.h"
#include "train/schedule.h"
#include "util/error.h"
#include "util/file.h"
#include "util/json_reader.h"

namespace intellect {

namespace {


// The batch's document segments for attention when train.doc_masking is on:
// the cu_seqlens pointer (nullptr when off) and the segment count.
std::pair<const int32_t*, int64_t> documents(const Batch& batch, const Config& cfg) {
  if (!cfg.train.doc_masking) return {nullptr, 0};
  return {batch.cu_seqlens.data(), static_cast<int64_t>(batch.cu_seqlens.size()) - 1};
}

// Mean next-token loss over `batches` fixed batches from the start of the
// validation data, so every evaluation sees the same tokens.
double evaluate(Backend& backend, const LoaderOptions& val_options, const Config& cfg) {
  DataLoader val(val_options);
  Batch batch;
  backend.take_loss();  // nothing pending belongs to the evaluation
  for (int64_t i = 0; i < cfg.train.eval_batches; ++i) {
    val.next(batch);
    const auto [cu_seqlens, n_segments] = documents(batch, cfg);
    backend.run(batch.inputs.data(), batch.targets.data(), cfg.train.micro_batch_size, 0.0f, 0.0f, false,
                nullptr, cu_seqlens, n_segments);
  }
  const cpu::LossSums s = backend.take_loss();
  return s.ce / static_cast<double>(s.n_valid);
}

void save_model(const std::string& dir, const Config& cfg, const ParamLayout& layout,
                const std::vector<float>& params, int64_t step) {
  make_dirs(dir);
  st::Writer w;
  for (const ParamEntry& e : layout.entries()) w.add_f32(e.name, e.shape, params.data() + e.offset);
  w.set_metadata("format", "intellect");
  w.set_metadata("step", std::to_string(step));
  w.write(dir + "/model.safetensors");
  const std::string cfg_text = cfg.json.dump(2) + "\n";
  write_file_atomic(dir + "/config.json", cfg_text.data(), cfg_text.size());
}

// One line per dataset when there is a mixture or a partitioning to report.
// `partition` is the one this node reads: in a mesh, the coordinator's
// assignment, not data.partition from the config.
void print_data_plan(const Config& cfg, const DataLoader& loader, uint64_t partition) {
  const auto& ds = loader.datasets();
  if (ds.size() > 1) {
    double sum = 0.0;
    for (const DataSource& s : cfg.data.train) sum += s.weight;
    if (std::fabs(sum - 1.0) > 1e-6)
      std::fprintf(stderr, "intellect: data.train weights sum to %g, not 1; they are used as relative shares\n",
                   sum);
    for (size_t i = 0; i < ds.size(); ++i)
      std::fprintf(stderr, "intellect:   %-20s %5.1f%% | %zu shard(s), %llu tokens, %llu windows in this partition\n",
                   ds[i].name().c_str(), 100.0 * loader.shares()[i], ds[i].shards().size(),
                   static_cast<unsigned long long>(ds[i].total_tokens()),
                   static_cast<unsigned long long>(ds[i].windows_per_epoch()));
  }
  if (cfg.data.partitions > 1)
    std::fprintf(stderr, "intellect: this node reads data partition %llu of %lld\n",
                 static_cast<unsigned long long>(partition), static_cast<long long>(cfg.data.partitions));
}


// The tokenizer files a checkpoint carries, so an export is usable as it is.
std::vector<std::string> tokenizer_files(const Config& cfg) {
  namespace fs = std::filesystem;
  const std::string& t = cfg.data.tokenizer;
  if (t.empty() || t == "byte") return {};
  std::error_code ec;
  const fs::path base = fs::is_directory(t, ec) ? fs::path(t) : fs::path(t).parent_path();
  std::vector<std::string> files;
  if (!fs::is_directory(t, ec) && fs::exists(t, ec)) files.push_back(t);
  for (const std::string& name : hf_tokenizer_file_names()) {
    const fs::path p = base / name;
    if (fs::exists(p, ec) && std::find(files.begin(), files.end(), p.string()) == files.end())
      files.push_back(p.string());
  }
  return files;
}

// A checkpoint's weights only fit a model of the same shape.
void check_same_model(const nlohmann::json& ckpt_config, const Config& cfg, const std::string& dir) {
  JsonReader r(ckpt_config.at("model"), dir + " (manifest)", "model");
  const nlohmann::json theirs = ModelConfig::from_json(r).to_json(), ours = cfg.model.to_json();
  std::string diff;
  for (auto& [k, v] : ours.items()) {
    if (k == "init_std") continue;  // only used to initialise
    if (!theirs.contains(k) || theirs[k] != v)
      diff += str("\n  model.", k, ": checkpoint ", theirs.contains(k) ? theirs[k].dump() : "absent", ", config ",
                  v.dump());
  }
  if (!diff.empty())
    fail(dir, ": the checkpoint was written for a different model than ", cfg.source, ":", diff);
}

// On resume the metrics file keeps the lines up to the resumed step, so it
// reads as one run.
void trim_metrics(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t(0)) <= last_step) kept += line + "\n";
    } catch (const nlohmann::json::parse_error&) {  // a line cut by a crash
    }
  }
  write_file_atomic(path, kept.data(), kept.size());
}

// `resume_dir` ("auto", a directory, or "") becomes the checkpoint found
// ("" when none); the state is read once (the search keeps what it read).
CheckpointState read_resume_checkpoint(const Config& cfg, std::string& resume_dir) {
  CheckpointState resumed;
  if (resume_dir == "auto") {
    FoundCheckpoint found = find_newest_checkpoint(
        cfg.ckpt.dir, true, [](const std::string& m) { note("ckpt.resume=auto: " + m); },
        [&](const CheckpointState& s) { check_same_model(s.config, cfg, "this checkpoint"); });
    resume_dir = found.dir;
    resumed = std::move(found.state);
    if (resume_dir.empty()) note(str("ckpt.resume=auto: no valid checkpoint under ", cfg.ckpt.dir, "; starting from step 0"));
  } else if (!resume_dir.empty()) {
    resumed = read_checkpoint(resume_dir, true);
    check_same_model(resumed.config, cfg, resume_dir);
  }
  if (!resume_dir.empty()) {
    if (resumed.exp_avg.empty())
      fail(resume_dir, ": holds weights only (no optimizer state), so training cannot resume from it; "
           "start from its weights with ckpt.init_from instead");
    if (resumed.step >= cfg.train.steps)
      fail(resume_dir, ": is at step ", resumed.step, ", and train.steps is ", cfg.train.steps, ": nothing left to do");
  }
  return resumed;
}


// What a mesh node is told by the config: the coordinator, its keys, the
// ring's codec and timeouts, test-only attacks and an emulated WAN link
// (both announced in the log).
MeshNodeOptions mesh_node_options(const Config& cfg, int64_t held_step, const std::atomic<bool>* stop) {
  MeshNodeOptions mo;
  mo.coordinator = cfg.mesh.coordinator;
  mo.listen = cfg.mesh.listen;
  mo.name = cfg.mesh.name.empty() ? str("node-", ::getpid()) : cfg.mesh.name;
  mo.held_step = held_step;
  mo.credentials = load_credentials(cfg.mesh.secret_file, cfg.mesh.node_key_file, cfg.mesh.allowlist_file,
                                    [](const std::string& m) { note(m); });
  note(str("mesh: this node authenticates with its ", mo.credentials.describe()));
  // A block rotation's selected values are one dense vector on every node:
  // the int4 (blocks4) or int2 (blocks2) ring averages them.
  mo.compression = parse_compression(cfg.diloco.ring_compression());
  mo.sparse_k = sparse_k_for_density(cfg.diloco.sparse_density, default_codec_block(Compression::Sparse));
  mo.sparse_aggregation = parse_sparse_aggregation(cfg.diloco.sparse_aggregation);
  mo.round_timeout = std::chrono::milliseconds(cfg.mesh.round_timeout_ms);
  mo.max_retries = static_cast<int>(cfg.mesh.max_retries);
  mo.rings = static_cast<int>(cfg.diloco.rings);
  mo.direct = cfg.diloco.all_reduce == "direct";
  mo.run_settings = run_settings(cfg).dump();
  if (mo.direct)
    note("mesh: dense rounds over the direct pattern (diloco.all_reduce=direct): each node sends each segment of its "
         "committed contribution to the segment's owner and takes the averages from every owner; N - 1 connections "
         "per ring each way");
  mo.message_timeout = std::chrono::milliseconds(cfg.mesh.message_timeout_ms);
  mo.serve_state = cfg.mesh.serve_state;
  mo.state_lanes = static_cast<int>(cfg.mesh.state_lanes);
  mo.state_stripe_donors = static_cast<int>(cfg.mesh.state_stripe_donors);
  mo.state_chunk_bytes = static_cast<size_t>(cfg.mesh.state_chunk_kib) << 10;
  mo.rounds_applied_late = cfg.diloco.overlap != "none";
  mo.announce_norms = cfg.mesh.announce_norms;
  mo.attack_scale = cfg.mesh.attack_scale;
  mo.attack_announce = cfg.mesh.attack_announce;
  mo.attack_false_accusation = cfg.mesh.attack_false_accusation;
  if (mo.attack_false_accusation)
    note(str("mesh: TEST ONLY: this node accuses its ring predecessors falsely (mode ", mo.attack_false_accusation, ")"));
  mo.attack_alter_forwarded = cfg.mesh.attack_alter_forwarded;
  if (mo.attack_alter_forwarded)
    note(str("mesh: TEST ONLY: this node alters other nodes' sparse chunks as it forwards them (mode ",
             mo.attack_alter_forwarded, ")"));
  if (mo.attack_scale != 1.0 || mo.attack_announce != 1.0)
    note(str("mesh: TEST ONLY: this node attacks the run (sends its pseudo-gradient x", mo.attack_scale,
             ", announces x", mo.attack_announce, " of what it sends)"));
  mo.log = [](const std::string& m) { note("mesh: " + m); };
  mo.emulate_link.rate_bytes_per_s = cfg.mesh.emulate_link_mbit * 1e6 / 8;
  mo.emulate_link.delay = std::chrono::milliseconds(cfg.mesh.emulate_link_delay_ms);
  mo.emulate_link.jitter = std::chrono::milliseconds(cfg.mesh.emulate_link_jitter_ms);
  mo.emulate_link.seed = std::hash<std::string>{}(mo.name);
  mo.emulate_link.peer_rate_bytes_per_s =
      slow_peers_of(mo.name, cfg.mesh.emulate_link_slow, cfg.mesh.emulate_link_slow_mbit * 1e6 / 8);
  if (mo.emulate_link.on())
    note("mesh: EMULATED WAN LINK for tests and benchmarks: ring traffic this node sends, and the state it "
         "serves, go through " + mo.emulate_link.describe() + " (mesh.emulate_link_*)");
  mo.stop = stop;
  return mo;
}

// Joins the run (the node holds outer step held_step): the coordinator
// assigns the data partition (a fresh one, or that of a node which left,
// with its position), written into train_options and inherited_position.
std::unique_ptr<MeshNode> join_mesh(const Config& cfg, int64_t held_step, const std::atomic<bool>* stop,
                                    LoaderOptions& train_options, std::string& inherited_position) {
  auto mesh = std::make_unique<MeshNode>(mesh_node_options(cfg, held_step, stop));
  if (mesh->welcome().partition >= static_cast<uint64_t>(cfg.data.partitions))
    fail("the coordinator assigned data partition ", mesh->welcome().partition, " but data.partitions is ",
         cfg.data.partitions, ": raise data.partitions to the largest number of nodes the run will have");
  train_options.partition = mesh->welcome().partition;
  inherited_position = mesh->welcome().data_position;
  return mesh;
}

// Checkpoints beyond the resumed step belong to a future this run abandons
// (a roll-back, or ones skipped as corrupt): kept, aside, so this run's
// saves and its rotation never collide with them.
void set_aside_checkpoints_after(const Config& cfg, int64_t step) {
  std::vector<std::string> newer;
  for (const std::string& d : list_checkpoints(cfg.ckpt.dir))
    if (std::filesystem::path(d).filename().string() > checkpoint_dir_name(step)) newer.push_back(d);
  if (newer.empty()) return;
  const std::string aside = cfg.ckpt.dir + ".after-step-" + std::to_string(step) + "-" +
                            std::to_string(static_cast<long long>(std::time(nullptr)));
  make_dirs(aside);
  for (const std::string& d : newer)
    std::filesystem::rename(d, aside + "/" + std::filesystem::path(d).filename().string());
  note(str("moved ", newer.size(), " checkpoint(s) newer than step ", step, " to ", aside));
}

// A fresh run never mixes its checkpoints with an earlier run's, and never
// deletes them: they are moved aside, and the user is told.
void set_aside_earlier_run(const Config& cfg) {
  if (!(cfg.ckpt.every > 0 || cfg.ckpt.save_final) || list_checkpoints(cfg.ckpt.dir).empty()) return;
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  std::string aside = cfg.ckpt.dir + ".previous-" + stamp;
  for (int i = 1; path_exists(aside); ++i) aside = cfg.ckpt.dir + ".previous-" + stamp + "-" + std::to_string(i);
  std::filesystem::rename(cfg.ckpt.dir, aside);
  note(str(cfg.ckpt.dir, " held checkpoints of an earlier run: moved to ", aside,
           " (set ckpt.resume=auto to continue a run instead of starting over)"));
}

// Where this run starts: the checkpoint read before joining (its state goes
// into the backend and, for DiLoCo, into *outer; the host copy is freed),
// weights to start from (ckpt.init_from), or step 0. Returns the step.
int64_t load_start(const Config& cfg, const std::string& resume_dir, CheckpointState& resumed, Backend& backend,
                   PrefetchLoader& loader, bool in_mesh, const LoaderOptions& train_options,
                   const std::string& inherited_position, OuterSync::Resumed* outer) {
  if (resume_dir.empty()) {
    if (!cfg.ckpt.init_from.empty()) {
      const CheckpointState w = read_checkpoint(cfg.ckpt.init_from, false);
      check_same_model(w.config, cfg, cfg.ckpt.init_from);
      backend.set_params(w.params.data());
      note(str("weights from ", cfg.ckpt.init_from, " (step ", w.step, "); optimizer and data start fresh"));
    }
    return 0;
  }
  backend.set_params(resumed.params.data());
  backend.set_optimizer_state(resumed.exp_avg, resumed.exp_avg_sq, resumed.optimizer_step);
  outer->outer = std::move(resumed.outer);
  outer->momentum = std::move(resumed.outer_momentum);
  outer->in_flight_step = resumed.outer_in_flight_step;
  outer->in_flight = std::move(resumed.outer_in_flight);
  outer->in_flight_standin_scale = resumed.outer_in_flight_standin_scale;
  outer->error_feedback = std::move(resumed.error_feedback);
  // In a mesh the coordinator's data accounting decides what this node
  // reads (its partition may be another one now, and the position it
  // hands over is newer than any checkpoint's); alone, the checkpoint's.
  if (!resumed.data_position.is_null() && !in_mesh) loader.seek(LoaderPosition::from_json(resumed.data_position));
  if (!resumed.data_position.is_null() && in_mesh)
    note(str("the checkpoint's data position is not used: the coordinator assigned partition ",
             train_options.partition, inherited_position.empty() ? " from its start" : " where its last node stopped"));
  const int64_t step = resumed.step;
  resumed = CheckpointState{};  // the state now lives in the backend; free the host copy
  note(str("resuming from ", resume_dir, " at step ", step));
  set_aside_checkpoints_after(cfg, step);
  return step;
}

// The metrics file, one JSON line per step; on resume it keeps the lines up
// to the resumed step.
std::ofstream open_metrics(const Config& cfg, int64_t start_step) {
  make_dirs(cfg.train.out_dir);
  const std::string path =
      cfg.train.metrics_file.empty() ? cfg.train.out_dir + "/metrics.jsonl" : cfg.train.metrics_file;
  if (start_step > 0 && path_exists(path)) trim_metrics(path, start_step);
  std::ofstream metrics(path, start_step > 0 ? std::ios::app : std::ios::trunc);
  if (!metrics) fail("cannot write metrics file '", path, "'");
  return metrics;
}

// Everything a checkpoint holds after `steps_done` steps: the backend's
// weights and optimizer state, DiLoCo's outer state (with overlap, the
// round in flight; with sparse, the unsent residual), the data position.
CheckpointState checkpoint_state(const Config& cfg, Backend& backend, const OuterSync* outer,
                                 const PrefetchLoader& loader, int64_t steps_done, double lr) {
  CheckpointState st;
  st.step = steps_done;
  st.config = cfg.json;
  st.params.resize(backend.layout().total());
  backend.get_params(st.params.data());
  backend.get_optimizer_state(st.exp_avg, st.exp_avg_sq, st.optimizer_step);
  if (outer) {
    st.outer = outer->optimizer().params();
    st.outer_momentum = outer->optimizer().momentum();
    // With overlap, the round in flight is part of the state: its
    // pseudo-gradient (which the round thread only reads), launched again
    // on resume.
    if (outer->in_flight_step() > 0) {
      st.outer_in_flight_step = outer->in_flight_step();
      st.outer_in_flight = outer->in_flight_pseudo_gradient();
      st.outer_in_flight_standin_scale = outer->in_flight_standin_scale();
    }
    // Sparse: the node's unsent residual, as of the outer state above
    // (a round in flight commits to it only when it is applied).
    if (outer->error_feedback()) st.error_feedback = outer->error_feedback()->values();
  }
  st.data_position = loader.position().to_json();
  st.rng = {{"train_seed", cfg.train.seed}, {"data_seed", cfg.data.seed},
            {"note", "all generators are counter-based: (seed, step/index) is the whole state"}};
  st.schedule = {{"step", steps_done}, {"lr", lr}, {"total_steps", cfg.train.steps}};
  st.tokenizer_files = tokenizer_files(cfg);
  return st;
}

// Hands the state after `steps_done` steps to the writer thread; returns
// the seconds the training thread paid (the host copy, and waiting for the
// previous save first: two host copies of the whole state would double the
// memory a checkpoint needs).
double save_checkpoint(AsyncCheckpointer& checkpointer, const Config& cfg, Backend& backend, const OuterSync* outer,
                       const PrefetchLoader& loader, int64_t steps_done, double lr) {
  const Clock::time_point c0 = Clock::now();
  checkpointer.wait();
  const double waited = seconds_since(c0);
  checkpointer.save(checkpoint_state(cfg, backend, outer, loader, steps_done, lr));
  if (waited > 0.01)
    note(str("step ", steps_done, ": waited ", waited, " s for the previous checkpoint to finish writing"));
  return seconds_since(c0);
}

// One optimizer step: each micro-batch's forward and backward (gradients
// accumulated, scaled by 1 / tokens per step), then the update at `lr`.
StepStats optimizer_step(const Config& cfg, Backend& backend, PrefetchLoader& loader, Batch& batch, double lr) {
  const float grad_scale = 1.0f / static_cast<float>(cfg.tokens_per_step());
  backend.zero_grads();
  for (int64_t micro = 0; micro < cfg.grad_accum_steps(); ++micro) {
    loader.next(batch);
    const auto [cu_seqlens, n_segments] = documents(batch, cfg);
    backend.run(batch.inputs.data(), batch.targets.data(), cfg.train.micro_batch_size,
                static_cast<float>(cfg.train.z_loss_weight), grad_scale, true, nullptr, cu_seqlens, n_segments);
  }
  return backend.step(lr);
}

void print_run_header(const Config& cfg, const Backend& backend, const PrefetchLoader& loader, uint64_t partition,
                      double unigram) {
  const ModelConfig& mc = cfg.model;
  std::fprintf(stderr,
               "intellect: %s | %.2fM parameters, %lld layers, dim %lld | %lld tokens/step "
               "(%lld x %lld seq x %lld accum) | %d threads\n",
               cfg.source.c_str(), static_cast<double>(backend.layout().total()) / 1e6,
               static_cast<long long>(mc.n_layers), static_cast<long long>(mc.dim),
               static_cast<long long>(cfg.tokens_per_step()), static_cast<long long>(cfg.train.micro_batch_size),
               static_cast<long long>(cfg.train.seq_len), static_cast<long long>(cfg.grad_accum_steps()),
               omp_get_max_threads());
  size_t n_shards = 0;
  uint64_t n_tokens = 0;
  for (const DatasetWindows& d : loader.loader().datasets()) {
    n_shards += d.shards().size();
    n_tokens += d.total_tokens();
  }
  std::fprintf(stderr, "intellect: training data %zu shard(s), %llu tokens, unigram entropy %.3f nats/token\n",
               n_shards, static_cast<unsigned long long>(n_tokens), unigram);
  print_data_plan(cfg, loader.loader(), partition);
  std::fprintf(stderr, "intellect: backend %s\n", backend.describe().c_str());
  std::fprintf(stderr, "intellect: attention %s\n",
               cfg.train.doc_masking ? "masked per packed document (a token sees earlier tokens of its own document; "
                                       "RoPE positions stay absolute within the row)"
                                     : "causal over each whole row (train.doc_masking=false)");
}

// The outer work after inner step `done`, which the training thread waits
// for: a boundary's outer step, a round applied on arrival or when due, and
// at the end the round still in flight. Each applied step goes into the
// step's metrics line under its key, the node's report and the log, with
// the seconds it held the thread (the run's compute utilization is
// 1 − their sum / wall time). Returns false when a stop request cancelled
// the boundary's round (the run then stops after this step).
bool outer_work(OuterSync& outer, const Config& cfg, int64_t done, const std::atomic<bool>* stop,
                TrainResult& result, NodeReport& report, nlohmann::json& line) {
  auto record = [&](const char* key, nlohmann::json o, double blocked) {
    result.outer_blocked_s += blocked;
    o["outer_blocked_s"] = blocked;
    report.outer_step(o);
    line[key] = o;
    if (!o.contains("outer_step")) return;  // a round launched, none applied (the first with overlap)
    if (o["late"].get<bool>())
      std::fprintf(stdout, "outer step %lld | late: caught up from a donor\n",
                   static_cast<long long>(o["outer_step"].get<int64_t>()));
    std::fprintf(stdout, "outer step %lld | ring of %lld | %.2f s all-reduce%s | hash %s\n",
                 static_cast<long long>(o["outer_step"].get<int64_t>()),
                 static_cast<long long>(o["ring_size"].get<int64_t>()), o["allreduce_s"].get<double>(),
                 outer.overlapped() ? " (overlapped)" : "", o["hash"].get<std::string>().c_str());
  };
  bool go_on = true;
  if (done % cfg.diloco.inner_steps == 0) {
    const Clock::time_point blocked_from = Clock::now();
    try {
      nlohmann::json o = outer.step(done);
      const char* key = o.contains("outer_step") ? "outer" : "outer_launched";
      record(key, std::move(o), seconds_since(blocked_from));
    } catch (const StoppedOnRequest& e) {
      // Without overlap a stop request cancels the round (OuterSync's
      // StopRelay): it is kept as in flight, and the stop goes on as any
      // other, with the final save holding that round.
      if (!stop || !stop->load()) throw;
      result.outer_blocked_s += seconds_since(blocked_from);
      note(str("step ", done, ": ", e.what()));
      go_on = false;
    }
  } else if (done < cfg.train.steps) {
    // diloco.apply_on_arrival / apply_after_steps: the round in flight,
    // applied as soon as its average is here, or waited for when due.
    const Clock::time_point blocked_from = Clock::now();
    nlohmann::json o = outer.apply_if_arrived(done);
    if (!o.is_null()) record("outer", std::move(o), seconds_since(blocked_from));
    else result.outer_blocked_s += seconds_since(blocked_from);  // a due round that must wait for the boundary
  }
  if (done == cfg.train.steps) {
    // With overlap, the round in flight is applied: the run ends on the
    // outer parameters every node shares.
    const Clock::time_point blocked_from = Clock::now();
    nlohmann::json o = outer.finish(done);
    if (!o.is_null()) {
      result.outer_final_blocked_s = seconds_since(blocked_from);
      record("outer_final", std::move(o), result.outer_final_blocked_s);
    }
  }
  return go_on;
}

// The step's log line, with the validation loss when there was an evaluation.
void print_step(const Config& cfg, int64_t done, double loss, double grad_norm, double lr, double tok_s, double dt,
                double eta_s, const double* val_loss) {
  std::fprintf(stdout, "step %6lld/%lld | loss %.4f | grad norm %.3f | lr %.3e | %.0f tok/s | %.1f ms | ETA %s",
               static_cast<long long>(done), static_cast<long long>(cfg.train.steps), loss, grad_norm, lr, tok_s,
               dt * 1e3, format_duration(eta_s).c_str());
  if (val_loss) std::fprintf(stdout, " | val loss %.4f", *val_loss);
  std::fprintf(stdout, "\n");
  std::fflush(stdout);
}

// The run's outputs: the model (safetensors + config) and where the next
// step's data starts, for a run that continues this one.
void save_outputs(const Config& cfg, Backend& backend, std::vector<float>& params, const PrefetchLoader& loader,
                  int64_t steps_done) {
  backend.get_params(params.data());
  save_model(cfg.train.out_dir, cfg, backend.layout(), params, steps_done);
  const std::string position_text = loader.position().to_json().dump(2) + "\n";
  write_file_atomic(cfg.train.out_dir + "/data_position.json", position_text.data(), position_text.size());
}

void print_utilization(const TrainResult& result) {
  char u[400];
  int len = std::snprintf(u, sizeof u,
                          "compute utilization %.1f%%: outer steps held the training thread for %.2f s of %.2f s",
                          100.0 * (1.0 - result.outer_blocked_s / result.wall_s), result.outer_blocked_s,
                          result.wall_s);
  const double final_s = result.outer_final_blocked_s;
  if (final_s > 0 && result.wall_s > final_s && len > 0 && len < static_cast<int>(sizeof u))
    std::snprintf(u + len, sizeof u - len,
                  ", %.2f s of it the end's wait for the last round; without that wait, which a run pays once "
                  "however long it is: steady-state utilization %.1f%%",
                  final_s, 100.0 * (1.0 - (result.outer_blocked_s - final_s) / (result.wall_s - final_s)));
  note(u);
}

}  // namespace

TrainResult train(const Config& cfg, const std::atomic<bool>* stop) {
  if (cfg.train.threads > 0) omp_set_num_threads(static_cast<int>(cfg.train.threads));
  const int64_t B = cfg.train.micro_batch_size, T = cfg.train.seq_len;
  const int64_t tokens_per_step = cfg.tokens_per_step();

  // The checkpoint to resume, read before joining: the coordinator hears
  // which outer step this node holds.
  std::string resume_dir = cfg.ckpt.resume == "none" ? "" : cfg.ckpt.resume;
  CheckpointState resumed = read_resume_checkpoint(cfg, resume_dir);
  LoaderOptions train_options = train_loader_options(cfg);
  std::string inherited_position;
  std::unique_ptr<MeshNode> mesh;
  if (!cfg.mesh.coordinator.empty()) {
    const int64_t held = resume_dir.empty() ? 0
                                            : OuterSync::held_outer_step(resumed.step, resumed.outer_in_flight_step,
                                                                         cfg.diloco.inner_steps);
    mesh = join_mesh(cfg, held, stop, train_options, inherited_position);
  }
  const bool have_val = !cfg.data.val.empty();
  const LoaderOptions val_options = have_val ? val_loader_options(cfg) : LoaderOptions{};
  if (have_val) DataLoader check(val_options);  // bad val data fails now, not at the first evaluation
  PrefetchLoader loader(train_options, static_cast<int>(cfg.data.prefetch));
  if (!inherited_position.empty()) {
    loader.seek(LoaderPosition::from_json(nlohmann::json::parse(inherited_position)));
    note(str("continuing data partition ", train_options.partition, " where its previous node stopped"));
  }

  std::unique_ptr<Backend> backend = make_backend(cfg, B, T);
  const ParamLayout& layout = backend->layout();
  std::vector<float> params(layout.total());
  init_params(params.data(), layout, cfg.model, cfg.train.seed);
  backend->set_params(params.data());
  OuterSync::Resumed resumed_outer;  // DiLoCo state from a checkpoint
  int64_t start_step = load_start(cfg, resume_dir, resumed, *backend, loader, mesh != nullptr, train_options,
                                  inherited_position, &resumed_outer);
  if (resume_dir.empty()) set_aside_earlier_run(cfg);
  std::ofstream metrics = open_metrics(cfg, start_step);
  // Saves copy the state to host memory and hand it to the writer thread:
  // the step pays only for the copy (and for waiting if the last save still runs).
  std::unique_ptr<AsyncCheckpointer> checkpointer;
  if (cfg.ckpt.every > 0 || cfg.ckpt.save_final)
    checkpointer = std::make_unique<AsyncCheckpointer>(cfg.ckpt.dir, cfg.ckpt.keep, note);

  const double unigram = unigram_entropy_nats(train_options.datasets, static_cast<uint32_t>(cfg.model.vocab_size));
  print_run_header(cfg, *backend, loader, static_cast<uint64_t>(train_options.partition), unigram);

  // DiLoCo: outer parameters and momentum in fp32 host memory; every
  // inner_steps steps the pseudo-gradient (outer - current) is averaged over
  // the mesh (or taken as it is, alone) and an outer Nesterov step gives the
  // new outer and inner parameters (train/outer_sync.h).
  std::unique_ptr<OuterSync> outer;
  if (cfg.diloco.enabled) {
    outer = std::make_unique<OuterSync>(cfg, *backend, mesh.get(), params, stop,
                                        [&loader] { return loader.position().to_json().dump(); });
    start_step = outer->start(start_step, !resume_dir.empty(), std::move(resumed_outer));
  }
  const nlohmann::json joined = outer ? outer->joined() : nlohmann::json();
  // The status this node's heartbeats carry, and train.metrics_listen's page.
  NodeReport report(cfg, backend->describe(), mesh.get(), start_step);
  if (!joined.is_null()) report.joined(joined);
  if (!report.url().empty()) std::fprintf(stderr, "intellect: this node's status page: %s\n", report.url().c_str());

  TrainResult result;
  Batch batch;
  int64_t steps_this_run = 0;
  double lr = 0.0;
  nlohmann::json line_joined;
  if (mesh) mesh->set_progress(start_step);
  const Clock::time_point run_t0 = Clock::now();
  for (int64_t step = start_step; step < cfg.train.steps; ++step) {
    const Clock::time_point t0 = Clock::now();
    lr = lr_at(cfg.optim, step, cfg.train.steps);
    const StepStats os = optimizer_step(cfg, *backend, loader, batch, lr);
    const double dt = seconds_since(t0);
    const double loss = os.loss.ce / static_cast<double>(os.loss.n_valid);
    const double z_loss = cfg.train.z_loss_weight * os.loss.z / static_cast<double>(os.loss.n_valid);
    if (!std::isfinite(loss) || !std::isfinite(os.grad_norm))
      fail("step ", step + 1, ": loss ", loss, ", grad norm ", os.grad_norm,
           " is not finite: lower optim.lr or raise optim.schedule.warmup_steps");
    if (step == start_step) result.first_loss = loss;
    if (step == start_step && !joined.is_null()) line_joined = joined;
    ++steps_this_run;
    result.last_loss = loss;
    result.steps = step + 1;

    const double tok_s = static_cast<double>(tokens_per_step) / dt;
    nlohmann::json line = {{"step", step + 1},          {"loss", loss},
                           {"z_loss", z_loss},          {"grad_norm", os.grad_norm},
                           {"lr", lr},                  {"tokens_per_s", tok_s},
                           {"ms", dt * 1e3},            {"tokens", (step + 1) * tokens_per_step},
                           {"data_position", loader.position().to_json()}};
    const bool pause = cfg.train.stop_after_steps > 0 && steps_this_run >= cfg.train.stop_after_steps;
    bool stopping = stop && stop->load();  // read once: a signal mid-step still gets the final save
    bool last = step + 1 == cfg.train.steps || stopping || pause;
    if (outer && !outer_work(*outer, cfg, step + 1, stop, result, report, line)) stopping = last = true;
    // After the outer step: the last evaluation is of the weights the run saves.
    const bool eval_now = have_val &&
                          (last || (cfg.train.eval_every > 0 && (step + 1) % cfg.train.eval_every == 0));
    if (eval_now) {
      result.final_val_loss = evaluate(*backend, val_options, cfg);
      line["val_loss"] = result.final_val_loss;
      report.val_loss(result.final_val_loss);
    }
    if (outer && outer->snapshot_wanted()) {
      line["snapshot_s"] = outer->publish_snapshot(step + 1);
      note(str("step ", step + 1, ": took a snapshot of outer step ", outer->outer_done(), " for a joiner: ",
               line["snapshot_s"].get<double>(), " s on the training thread (the moments; copied, hashed and "
               "served from other threads)"));
    }
    if (checkpointer && ((cfg.ckpt.every > 0 && (step + 1) % cfg.ckpt.every == 0) || (last && cfg.ckpt.save_final)))
      line["ckpt_stall_ms"] = save_checkpoint(*checkpointer, cfg, *backend, outer.get(), loader, step + 1, lr) * 1e3;
    if (!line_joined.is_null()) {
      line["joined"] = line_joined;
      line_joined = nullptr;
    }
    metrics << line.dump() << "\n" << std::flush;
    report.step_done(step + 1, loss, tok_s, result.outer_blocked_s);
    if ((step + 1) % cfg.train.log_every == 0 || step == 0 || last)
      print_step(cfg, step + 1, loss, os.grad_norm, lr, tok_s, dt, report.eta_s(),
                 eval_now ? &result.final_val_loss : nullptr);
    if (stopping) {
      note(str("stopping after step ", step + 1, " on request"));
      break;
    }
    if (pause) {
      note(str("stopping after ", steps_this_run, " steps of this run (train.stop_after_steps); resume with ckpt.resume=auto"));
      break;
    }
    if (const int64_t skip_to = outer ? outer->take_skip_to() : 0; skip_to > step + 1) {
      note(str("lining up with the run: steps ", step + 2, "..", skip_to, " skipped"));
      step = skip_to - 1;
    }
    if (mesh) mesh->set_progress(step + 1);
  }
  // A round still in flight (stopped before the end) is given up; the
  // checkpoint just written holds it.
  if (outer) outer->abandon();
  result.wall_s = seconds_since(run_t0);
  if (outer && result.wall_s > 0) print_utilization(result);
  if (checkpointer) checkpointer->wait();  // the final checkpoint is on disk before we return
  if (mesh) mesh->leave("training finished");
  save_outputs(cfg, *backend, params, loader, start_step + steps_this_run);
  std::fprintf(stderr, "intellect: loss %.4f -> %.4f (unigram entropy %.3f); model saved to %s/model.safetensors\n",
               result.first_loss, result.last_loss, unigram, cfg.train.out_dir.c_str());
  return result;
}

}  // namespace intellect
