// Checkpoints: atomic writes that survive a writer killed mid-save, exact
// resume, corruption and mismatch detection, rotation, and the stall an
// asynchronous save costs the training loop.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "ckpt/async_checkpointer.h"
#include "ckpt/checkpoint.h"
#include "ckpt/safetensors.h"
#include "data/synthetic_corpus.h"
#include "model/init.h"
#include "model/layout.h"
#include "test_util.h"
#include "train/config.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

namespace fs = std::filesystem;

ModelConfig tiny_model() {
  ModelConfig c;
  c.vocab_size = 50;
  c.dim = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  c.ffn_dim = 24;
  c.max_seq_len = 32;
  return c;
}

CheckpointState make_state(const ModelConfig& m, int64_t step, uint64_t seed) {
  CheckpointState s;
  s.step = step;
  s.config = {{"model", m.to_json()}};
  const ParamLayout layout(m);
  s.params = test::randn(layout.total(), seed);
  s.exp_avg = test::randn(layout.total(), seed + 1);
  s.exp_avg_sq = test::randn(layout.total(), seed + 2);
  s.optimizer_step = step;
  s.data_position = {{"rows", step * 4}};
  s.schedule = {{"step", step}};
  return s;
}

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/" + name;
  fs::remove_all(d);
  return d;
}


TEST(Checkpoint, RoundTripIsExact) {
  const std::string root = fresh_dir("ckpt_roundtrip");
  const CheckpointState s = make_state(tiny_model(), 7, 1);
  const std::string dir = write_checkpoint(root, s);
  EXPECT_EQ(fs::path(dir).filename(), "step_00000007");
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "manifest.json", "COMPLETE"})
    EXPECT_TRUE(path_exists(dir + "/" + f)) << f;
  const CheckpointState r = read_checkpoint(dir);
  EXPECT_EQ(r.step, 7);
  EXPECT_EQ(r.params, s.params);
  EXPECT_EQ(r.exp_avg, s.exp_avg);
  EXPECT_EQ(r.exp_avg_sq, s.exp_avg_sq);
  EXPECT_EQ(r.optimizer_step, 7);
  EXPECT_EQ(r.data_position, s.data_position);
  EXPECT_EQ(checkpoint_model_config(dir).to_json(), tiny_model().to_json());
  // The model file is a plain safetensors file any reader can open.
  const st::File f = st::File::open(dir + "/model.safetensors");
  EXPECT_EQ(f.get("layers.1.wqkv").shape, (std::vector<int64_t>{32, 16}));
  EXPECT_THROW(write_checkpoint(root, s), Error);  // never overwrites a complete one
}

// A round in flight (eager overlap) keeps its stand-in scale exactly; a
// manifest without it reads as 1 (checkpoints written before the fitted
// stand-in), and one outside [0, 1] is refused.
TEST(Checkpoint, RoundInFlightKeepsItsStandinScale) {
  const std::string root = fresh_dir("ckpt_standin_scale");
  CheckpointState s = make_state(tiny_model(), 9, 3);
  s.outer = test::randn(s.params.size(), 10);
  s.outer_momentum = test::randn(s.params.size(), 11);
  s.outer_in_flight_step = 2;
  s.outer_in_flight = test::randn(s.params.size(), 12);
  s.outer_in_flight_standin_scale = 0.3141592f;
  const std::string dir = write_checkpoint(root, s);
  const CheckpointState r = read_checkpoint(dir);
  EXPECT_EQ(r.outer_in_flight_step, 2);
  EXPECT_EQ(r.outer_in_flight, s.outer_in_flight);
  EXPECT_EQ(r.outer_in_flight_standin_scale, 0.3141592f);
  auto manifest = nlohmann::json::parse(read_text_file(dir + "/manifest.json"));
  manifest.erase("outer_in_flight_standin_scale");
  std::string text = manifest.dump(2);
  write_file_atomic(dir + "/manifest.json", text.data(), text.size());
  EXPECT_EQ(read_checkpoint(dir).outer_in_flight_standin_scale, 1.0f);
  manifest["outer_in_flight_standin_scale"] = 1.5;
  text = manifest.dump(2);
  write_file_atomic(dir + "/manifest.json", text.data(), text.size());
  try {
    read_checkpoint(dir);
    FAIL() << "a scale of 1.5 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outer_in_flight_standin_scale is 1.5"), std::string::npos) << e.what();
  }
}

// Kills a writer at each point of the write; the older checkpoint must survive
// intact and the half-written one must never pass as valid.
TEST(Checkpoint, WriterKilledMidSaveLeavesThePreviousOneIntact) {
  for (const char* point : {"after_model", "before_rename", "before_marker"}) {
    SCOPED_TRACE(point);
    const std::string root = fresh_dir(std::string("ckpt_crash_") + point);
    const CheckpointState old = make_state(tiny_model(), 10, 3);
    write_checkpoint(root, old);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      setenv("INTELLECT_CKPT_TEST_CRASH", point, 1);
      write_checkpoint(root, make_state(tiny_model(), 20, 4));
      _exit(0);  // not reached: the crash point exits with 86
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 86) << "the writer did not stop at the crash point";
    std::vector<std::string> reports;
    const std::string newest = newest_valid_checkpoint(root, [&](const std::string& m) { reports.push_back(m); });
    EXPECT_EQ(fs::path(newest).filename(), "step_00000010");
    EXPECT_EQ(read_checkpoint(newest).params, old.params);
    if (std::string(point) == "before_marker") {
      ASSERT_EQ(reports.size(), 1u);
      EXPECT_NE(reports[0].find("incomplete checkpoint"), std::string::npos) << reports[0];
    }
    // The next save of that step cleans up and succeeds.
    prune_checkpoints(root, 3);
    write_checkpoint(root, make_state(tiny_model(), 20, 4));
    EXPECT_EQ(fs::path(newest_valid_checkpoint(root, nullptr)).filename(), "step_00000020");
  }
}

TEST(Checkpoint, CorruptionTruncationAndMismatchAreRefused) {
  const std::string root = fresh_dir("ckpt_corrupt");
  const std::string dir = write_checkpoint(root, make_state(tiny_model(), 5, 5));
  const std::string model = dir + "/model.safetensors";
  std::vector<uint8_t> bytes = read_file(model);
  // one flipped bit in the data section
  bytes[bytes.size() - 100] ^= 0x10;
  write_file_atomic(model, bytes.data(), bytes.size());
  EXPECT_NE(test::error_of([&] { read_checkpoint(dir); }).find("does not match its checksum"), std::string::npos);
  // truncated
  bytes[bytes.size() - 100] ^= 0x10;
  write_file_atomic(model, bytes.data(), bytes.size() - 64);
  EXPECT_NE(test::error_of([&] { read_checkpoint(dir); }).find("truncated"), std::string::npos);
  // missing marker
  write_file_atomic(model, bytes.data(), bytes.size());
  EXPECT_NO_THROW(read_checkpoint(dir));
  fs::remove(dir + "/COMPLETE");
  EXPECT_NE(test::error_of([&] { read_checkpoint(dir); }).find("no COMPLETE marker"), std::string::npos);
  // not a checkpoint at all
  EXPECT_NE(test::error_of([&] { read_checkpoint(root + "/nope"); }).find("does not exist"), std::string::npos);
}

TEST(Checkpoint, KeepsTheNewestN) {
  const std::string root = fresh_dir("ckpt_keep");
  for (int64_t step : {1, 2, 3, 4, 5}) write_checkpoint(root, make_state(tiny_model(), step, step));
  prune_checkpoints(root, 2);
  const auto dirs = list_checkpoints(root);
  ASSERT_EQ(dirs.size(), 2u);
  EXPECT_EQ(fs::path(dirs[0]).filename(), "step_00000005");
  EXPECT_EQ(fs::path(dirs[1]).filename(), "step_00000004");
}

// The training loop pays only for handing over a host copy; the write runs
// on the checkpointer's thread.
TEST(Checkpoint, AsyncSaveStallIsTheHandOverNotTheWrite) {
  const std::string root = fresh_dir("ckpt_async");
  ModelConfig m = tiny_model();
  m.dim = 512;
  m.n_heads = 8;
  m.n_kv_heads = 4;
  m.head_dim = 64;
  m.ffn_dim = 1536;
  m.n_layers = 4;
  m.vocab_size = 4096;
  CheckpointState s = make_state(m, 1, 9);  // ~17M parameters: 200 MB with optimizer state
  std::vector<std::string> log;
  AsyncCheckpointer ck(root, 2, [&](const std::string& line) { log.push_back(line); });
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  ck.save(std::move(s));
  const double stall = std::chrono::duration<double>(Clock::now() - t0).count();
  ck.wait();
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("async checkpoint of %.0f MB: stall %.3f ms, write %.1f ms\n",
              3.0 * ParamLayout(m).total() * 4 / 1e6, stall * 1e3, total * 1e3);
  EXPECT_LT(stall, 0.1 * total);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("written"), std::string::npos);
  EXPECT_FALSE(newest_valid_checkpoint(root, nullptr).empty());
}

// Train N+M steps straight, and N steps, stop, resume, M more: bit-identical.
TEST(Checkpoint, ResumeIsBitIdenticalOnCpu) {
  const std::string corpus = fresh_dir("ckpt_corpus");
  CorpusOptions o;
  o.out_dir = corpus;
  o.docs = 200;
  o.val_docs = 10;
  write_corpus(o);
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{
        "model.dim=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=16",
        "model.ffn_dim=64", "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=4",
        "train.micro_batch_size=2", "train.steps=8", "train.log_every=1000", "train.eval_every=0",
        "data.train=" + corpus + "/train_*.bin", "data.val=", "train.out_dir=" + out, "ckpt.every=2"};
  };
  const std::string a = fresh_dir("ckpt_run_a"), b = fresh_dir("ckpt_run_b");
  train(load_config("", args(a)));
  auto first = args(b);
  first.push_back("train.stop_after_steps=3");  // stops after step 3 and saves step 3
  train(load_config("", first));
  auto second = args(b);
  second.push_back("ckpt.resume=auto");
  train(load_config("", second));
  auto lines = [](const std::string& path) {
    std::vector<std::string> v;
    std::ifstream f(path);
    for (std::string l; std::getline(f, l);) {
      auto j = nlohmann::json::parse(l);
      v.push_back(nlohmann::json{{"step", j["step"]}, {"loss", j["loss"]}, {"grad_norm", j["grad_norm"]},
                                 {"lr", j["lr"]}, {"data_position", j["data_position"]}}
                      .dump());
    }
    return v;
  };
  EXPECT_EQ(lines(a + "/metrics.jsonl"), lines(b + "/metrics.jsonl"));
  const st::File fa = st::File::open(a + "/model.safetensors"), fb = st::File::open(b + "/model.safetensors");
  for (const st::TensorInfo& t : fa.tensors()) {
    const auto x = fa.bytes(t), y = fb.bytes(fb.get(t.name));
    ASSERT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << t.name;
  }
  // A checkpoint of another model shape, named explicitly, is refused with
  // the fields that differ (ckpt.resume=auto skips such checkpoints instead).
  auto other = args(b);
  other.push_back("ckpt.resume=" + b + "/checkpoints/step_00000008");
  other[0] = "model.dim=64";
  const std::string e = test::error_of([&] { train(load_config("", other)); });
  EXPECT_NE(e.find("different model"), std::string::npos) << e;
  EXPECT_NE(e.find("model.dim: checkpoint 32, config 64"), std::string::npos) << e;
}

// DiLoCo alone (no mesh): stopping between outer steps and resuming restores
// the outer parameters and momentum, so the run is still bit-identical.
TEST(Checkpoint, DilocoResumeBetweenOuterStepsIsBitIdentical) {
  const std::string corpus = fresh_dir("ckpt_diloco_corpus");
  CorpusOptions o;
  o.out_dir = corpus;
  o.docs = 150;
  o.val_docs = 10;
  write_corpus(o);
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{
        "model.dim=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=16",
        "model.ffn_dim=64", "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=4",
        "train.micro_batch_size=4", "train.steps=12", "train.log_every=1000", "train.eval_every=0",
        "data.train=" + corpus + "/train_*.bin", "data.val=", "train.out_dir=" + out, "diloco.enabled=true",
        "diloco.inner_steps=4"};
  };
  const std::string a = fresh_dir("ckpt_diloco_a"), b = fresh_dir("ckpt_diloco_b");
  train(load_config("", args(a)));
  auto first = args(b);
  first.push_back("train.stop_after_steps=6");  // between outer steps 1 (step 4) and 2 (step 8)
  train(load_config("", first));
  EXPECT_TRUE(path_exists(b + "/checkpoints/step_00000006/outer.safetensors"));
  auto second = args(b);
  second.push_back("ckpt.resume=auto");
  train(load_config("", second));
  auto losses = [](const std::string& path) {
    std::vector<double> v;
    std::ifstream f(path);
    for (std::string l; std::getline(f, l);) v.push_back(nlohmann::json::parse(l)["loss"].get<double>());
    return v;
  };
  EXPECT_EQ(losses(a + "/metrics.jsonl"), losses(b + "/metrics.jsonl"));
  const st::File fa = st::File::open(a + "/model.safetensors"), fb = st::File::open(b + "/model.safetensors");
  for (const st::TensorInfo& t : fa.tensors()) {
    const auto x = fa.bytes(t), y = fb.bytes(fb.get(t.name));
    ASSERT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << t.name;
  }
}

}  // namespace
}  // namespace intellect
