// End-to-end training on the CPU backend: the loss falls, runs are
// deterministic given the seed, metrics and the model are written, and the
// command line fails cleanly on bad input.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "ckpt/safetensors.h"
#include "data/synthetic_corpus.h"
#include "model/init.h"
#include "test_util.h"
#include "train/backend.h"
#include "train/config.h"
#include "train/join_state.h"
#include "train/outer_sync.h"
#include "train/snapshot_copier.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

const std::string& corpus_dir() {
  static const std::string dir = [] {
    // One per process: ctest runs these tests as parallel processes, and a
    // shared directory would be removed under another test's feet.
    const std::string d = ::testing::TempDir() + "/train_corpus_" + std::to_string(::getpid());
    std::filesystem::remove_all(d);
    CorpusOptions o;
    o.out_dir = d;
    o.docs = 400;
    o.val_docs = 20;
    write_corpus(o);
    return d;
  }();
  return dir;
}

// Arguments for a fresh small run into out_dir (emptied first).
std::vector<std::string> small_run(const std::string& out_dir, int64_t steps) {
  std::filesystem::remove_all(out_dir);
  return {"model.dim=48",           "model.n_layers=2",      "model.n_heads=4",
          "model.n_kv_heads=2",     "model.head_dim=12",     "model.ffn_dim=128",
          "model.max_seq_len=64",   "train.seq_len=64",      "train.batch_size=8",
          "train.micro_batch_size=4", "train.steps=" + std::to_string(steps),
          "train.log_every=1000",   "train.eval_every=0",    "train.eval_batches=2",
          "optim.lr=1e-2",          "optim.schedule.warmup_steps=5",
          "data.train=" + corpus_dir() + "/train_*.bin", "data.val=" + corpus_dir() + "/val_*.bin",
          "train.out_dir=" + out_dir};
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::ifstream f(path);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(f, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

TEST(Train, LossFallsAndRunsAreDeterministic) {
  const std::string a = ::testing::TempDir() + "/run_a", b = ::testing::TempDir() + "/run_b";
  const TrainResult ra = train(load_config("", small_run(a, 40)));
  train(load_config("", small_run(b, 40)));
  EXPECT_EQ(ra.steps, 40);
  EXPECT_LT(ra.last_loss, ra.first_loss - 1.5) << "loss did not fall enough";
  EXPECT_GT(ra.final_val_loss, 0.0);
  const auto ma = read_metrics(a + "/metrics.jsonl"), mb = read_metrics(b + "/metrics.jsonl");
  ASSERT_EQ(ma.size(), 40u);
  ASSERT_EQ(mb.size(), 40u);
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(ma[i]["step"], static_cast<int64_t>(i + 1));
    for (const char* k : {"loss", "grad_norm", "lr", "z_loss"})
      EXPECT_EQ(ma[i][k].get<double>(), mb[i][k].get<double>()) << k << " differs at step " << i + 1;
    for (const char* k : {"tokens_per_s", "ms", "tokens"}) EXPECT_TRUE(ma[i].contains(k)) << k;
  }
  EXPECT_TRUE(ma.back().contains("val_loss"));
  // Same seed, same weights, bit for bit.
  const st::File wa = st::File::open(a + "/model.safetensors"), wb = st::File::open(b + "/model.safetensors");
  ASSERT_EQ(wa.tensors().size(), wb.tensors().size());
  for (const st::TensorInfo& t : wa.tensors()) {
    auto x = wa.bytes(t), y = wb.bytes(wb.get(t.name));
    ASSERT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << t.name;
  }
}

TEST(Train, GradientAccumulationMatchesOneBigBatch) {
  // 1 micro-batch of 8 and 4 micro-batches of 2 see the same tokens; the
  // step's gradient is the same mean, so losses agree to rounding.
  const std::string a = ::testing::TempDir() + "/accum_a", b = ::testing::TempDir() + "/accum_b";
  auto args_a = small_run(a, 3), args_b = small_run(b, 3);
  args_a.push_back("train.micro_batch_size=8");
  args_b.push_back("train.micro_batch_size=2");
  train(load_config("", args_a));
  train(load_config("", args_b));
  const auto ma = read_metrics(a + "/metrics.jsonl"), mb = read_metrics(b + "/metrics.jsonl");
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(ma[i]["loss"].get<double>(), mb[i]["loss"].get<double>(), 1e-4);
    EXPECT_NEAR(ma[i]["grad_norm"].get<double>(), mb[i]["grad_norm"].get<double>(),
                1e-4 * ma[i]["grad_norm"].get<double>());
  }
}


const std::string kTrain = test::binary_dir() + "/intellect_train";

TEST(TrainCli, BadInputFailsWithClearMessages) {
  test::CommandResult r = test::run_command(kTrain + " --bogus");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown argument '--bogus'"), std::string::npos) << r.output;
  r = test::run_command(kTrain + " --set model.dim=0");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("model.dim: must be in [1"), std::string::npos) << r.output;
  r = test::run_command(kTrain + " --set data.train=/nonexistent/shards_*.bin --set train.steps=1");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("/nonexistent/shards_*.bin"), std::string::npos) << r.output;
  r = test::run_command(kTrain + " --print-config --set train.steps=3");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("\"steps\": 3"), std::string::npos) << r.output;
}

TEST(TrainCli, NotAShardIsRefused) {
  const std::string bad = ::testing::TempDir() + "/not_a_shard.bin";
  write_file_atomic(bad, "hello world, not tokens", 23);
  test::CommandResult r = test::run_command(kTrain + " --set train.steps=1 --set data.val= --set data.train=" + bad);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;
}

TEST(TrainCli, TrainsFromTheCommandLine) {
  const std::string out = ::testing::TempDir() + "/cli_run";
  std::string cmd = kTrain;
  for (const std::string& s : small_run(out, 3)) cmd += " --set " + s;
  test::CommandResult r = test::run_command(cmd);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("step      3/3 | loss"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("unigram entropy"), std::string::npos) << r.output;
  EXPECT_TRUE(path_exists(out + "/model.safetensors"));
  EXPECT_EQ(read_metrics(out + "/metrics.jsonl").size(), 3u);
}

// The outer loop's host memory without overlap: the outer parameters and
// the momentum of its own, and the pseudo-gradient and the average in the
// loop's weights (computed and averaged in place until the outer step
// overwrites them): three fp32 copies of the model in all. With overlap,
// the pseudo-gradient in flight is one more. Alone (no mesh), an outer step
// is the node's own pseudo-gradient applied, and the weights it hands back
// are the new outer parameters.
TEST(OuterSync, TwoCopiesOfItsOwnAndThePseudoGradientAndAverageInTheWeights) {
  Config cfg = load_config("", {"diloco.enabled=true", "diloco.inner_steps=2", "model.n_layers=1", "model.dim=32",
                                "model.ffn_dim=64", "model.head_dim=8", "train.threads=1"});
  auto backend = make_backend(cfg, 1, 16);
  const size_t n = backend->layout().total();
  std::vector<float> params(n);
  init_params(params.data(), backend->layout(), cfg.model, 3);
  backend->set_params(params.data());
  OuterSync sync(cfg, *backend, nullptr, params, nullptr, [] { return std::string("{}"); });
  EXPECT_EQ(sync.start(0, false, {}), 0);
  EXPECT_EQ(sync.host_bytes(), 2 * n * sizeof(float));
  // Move the weights as inner steps would, then take the outer step.
  std::vector<float> moved = params;
  for (size_t i = 0; i < n; ++i) moved[i] += 0.01f * static_cast<float>(i % 7);
  backend->set_params(moved.data());
  const nlohmann::json line = sync.step(2);
  EXPECT_EQ(line["outer_step"], 1);
  EXPECT_EQ(line["way"], "ring");
  std::vector<float> now(n);
  backend->get_params(now.data());
  EXPECT_EQ(now, sync.optimizer().params());
  EXPECT_EQ(params, sync.optimizer().params());
  EXPECT_EQ(sync.host_bytes(), 2 * n * sizeof(float));
  cfg.diloco.overlap = "eager";
  OuterSync overlapped(cfg, *backend, nullptr, params, nullptr, [] { return std::string("{}"); });
  EXPECT_EQ(overlapped.start(0, false, {}), 0);
  EXPECT_EQ(overlapped.host_bytes(), 3 * n * sizeof(float)) << "the pseudo-gradient in flight";
}

// A donor's snapshot for a joiner is copied into the wire format off the
// training thread, from the outer state where it lives. An outer step that
// comes while the copy is still running waits for it: the joiner gets the
// outer parameters and momentum of the step it asked at, exactly, not a
// mix with the next step's (without the wait, the boundary below would
// change them under the copy, which the test holds open).
TEST(OuterSync, ASnapshotCopiedWhileABoundaryArrivesIsOfOneOuterStep) {
  Config cfg = load_config("", {"diloco.enabled=true", "diloco.inner_steps=2", "model.n_layers=1", "model.dim=32",
                                "model.ffn_dim=64", "model.head_dim=8", "train.threads=1"});
  auto backend = make_backend(cfg, 1, 16);
  const size_t n = backend->layout().total();
  std::vector<float> params(n);
  init_params(params.data(), backend->layout(), cfg.model, 3);
  backend->set_params(params.data());
  OuterSync sync(cfg, *backend, nullptr, params, nullptr, [] { return std::string("{}"); });
  ASSERT_EQ(sync.start(0, false, {}), 0);
  auto move_weights = [&](float by) {
    std::vector<float> w(n);
    backend->get_params(w.data());
    for (size_t i = 0; i < n; ++i) w[i] += by * static_cast<float>(i % 7 + 1);
    backend->set_params(w.data());
  };
  move_weights(0.01f);
  sync.step(2);  // outer step 1: outer parameters moved, momentum not zero
  const std::vector<float> outer1 = sync.optimizer().params(), momentum1 = sync.optimizer().momentum();
  std::vector<float> m, v;
  int64_t adam_step = 0;
  backend->get_optimizer_state(m, v, adam_step);

  ByteBuffer got;
  int64_t got_step = -1;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> copying{false};
  SnapshotCopier& copier = sync.snapshot_copier_for_test();
  copier.set_sink_for_test([&](int64_t k, ByteBuffer b) {
    got_step = k;
    got = std::move(b);
  });
  copier.set_before_copy_for_test([&] {
    copying = true;
    released.wait();
  });
  sync.publish_snapshot(3);
  for (int t = 0; t < 500 && !copying; ++t) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(copying.load());
  EXPECT_TRUE(copier.busy());
  EXPECT_FALSE(sync.snapshot_wanted()) << "no second snapshot while one is being copied";

  move_weights(0.02f);
  std::atomic<bool> stepped{false};
  nlohmann::json line;
  std::thread boundary([&] {
    line = sync.step(4);  // outer step 2
    stepped = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(stepped.load()) << "the outer step went ahead while its state was being copied";
  release.set_value();
  boundary.join();
  ASSERT_TRUE(stepped.load());
  EXPECT_EQ(line["outer_step"], 2);
  EXPECT_TRUE(line["parts"].contains("snapshot_wait_s")) << "the wait is in the metrics: " << line.dump();
  EXPECT_NE(sync.optimizer().params(), outer1) << "outer step 2 moved the outer parameters";

  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got_step, 1);
  const JoinState js = decode_join_state(got, n);
  EXPECT_EQ(js.outer_step, 1);
  EXPECT_EQ(js.step, 3);
  EXPECT_EQ(js.outer, outer1);
  EXPECT_EQ(js.momentum, momentum1);
  EXPECT_EQ(js.exp_avg, m);
  EXPECT_EQ(js.exp_avg_sq, v);
  EXPECT_EQ(js.adam_step, adam_step);
}

}  // namespace
}  // namespace intellect

namespace intellect {
namespace {

// A joiner's state as a donor encodes it, on one thread or several (arrays
// of several copy blocks each, the last one short), decodes to the same
// values; a model of another size is refused by name.
TEST(JoinState, EncodesOnSeveralThreadsAndDecodesToTheSameValues) {
  const size_t n = (size_t{5} << 20) + 123;  // 20 MB an array: three 8 MB blocks, the last short
  std::vector<std::vector<float>> a;
  for (uint64_t seed = 1; seed <= 4; ++seed) a.push_back(test::randn(n, seed));
  const JoinStateView view{7, 700, 650, a[0], a[1], a[2], a[3]};
  const ByteBuffer one = encode_join_state(view, 1), many = encode_join_state(view, 6);
  EXPECT_EQ(one, many);
  const JoinState back = decode_join_state(many, n);
  EXPECT_EQ(back.outer_step, 7);
  EXPECT_EQ(back.step, 700);
  EXPECT_EQ(back.adam_step, 650);
  EXPECT_EQ(back.outer, a[0]);
  EXPECT_EQ(back.momentum, a[1]);
  EXPECT_EQ(back.exp_avg, a[2]);
  EXPECT_EQ(back.exp_avg_sq, a[3]);
  EXPECT_EQ(encode_join_state(back), one);
  EXPECT_NE(test::error_of([&] { decode_join_state(one, n - 1); }).find("same model config"), std::string::npos);
  std::vector<uint8_t> cut(one.begin(), one.end() - 1);
  EXPECT_THROW(decode_join_state(cut, n), Error);
}

// Two nodes at the same outer step hold the same outer parameters and
// momentum but their own moments and step counts: their encoded states
// agree on exactly the shared prefix, whatever the headers hold, which is
// what lets a joiner fetch that prefix from several donors.
TEST(JoinState, NodesAtTheSameOuterStepShareThePrefixOnly) {
  const size_t n = 10'000;
  const std::vector<float> outer = test::randn(n, 1), momentum = test::randn(n, 2);
  const std::vector<float> m1 = test::randn(n, 3), v1 = test::randn(n, 4), m2 = test::randn(n, 5),
                           v2 = test::randn(n, 6);
  const ByteBuffer a = encode_join_state(JoinStateView{4, 400, 400, outer, momentum, m1, v1});
  const ByteBuffer b = encode_join_state(JoinStateView{4, 123456789, 98765, outer, momentum, m2, v2});
  const uint64_t shared = join_state_shared_bytes(n);
  ASSERT_LT(shared, a.size());
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(shared), b.begin()));
  EXPECT_NE(a[shared], b[shared]) << "the moments differ right after the prefix";
  EXPECT_NE(a.size(), b.size()) << "headers of other lengths (the tests below rely on it)";
  EXPECT_EQ(decode_join_state(b, n).step, 123456789);
  // A state of the previous format (header first) is refused with a reason.
  std::vector<uint8_t> old(a.begin(), a.end());
  old.back() = '1';
  EXPECT_NE(test::error_of([&] { decode_join_state(old, n); }).find("same build"), std::string::npos);
}

}  // namespace
}  // namespace intellect
