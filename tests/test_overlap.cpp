// DiLoCo with overlap (diloco.overlap, issue 15 part 2): each outer step's
// all-reduce runs on a thread of its own while the next round's inner steps
// run, and is applied one round late. Nodes still agree bit for bit at
// every applied outer step and end on the same weights; alone, eager
// overlap is DiLoCo itself, bit for bit; the round in flight is part of a
// checkpoint; the loss stays within a few percent of blocking DiLoCo on the
// same tokens. (Kills during an overlapped round and the chaos run with
// overlap are in test_elastic.cpp; MeshNode's cancel in test_mesh.cpp.)
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint.h"
#include "ckpt/safetensors.h"
#include "test_util.h"
#include "train/config.h"
#include "train/trainer.h"
#include "util/error.h"

namespace intellect {
namespace {

namespace fs = std::filesystem;

std::string corpus_dir() { return ::testing::TempDir() + "/overlap_corpus"; }

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/" + name;
  fs::remove_all(d);
  return d;
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream f(path);
  for (std::string l; std::getline(f, l);) lines.push_back(nlohmann::json::parse(l));
  return lines;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Every applied outer step in a node's metrics (each boundary's "outer",
// and "outer_final" at the end), by outer step: its metrics object.
std::map<int64_t, nlohmann::json> applied_outer_steps(const std::vector<nlohmann::json>& lines) {
  std::map<int64_t, nlohmann::json> out;
  for (const auto& l : lines)
    for (const char* key : {"outer", "outer_final"})
      if (l.contains(key)) {
        nlohmann::json o = l[key];
        o["at_step"] = l["step"];
        out[o["outer_step"].get<int64_t>()] = o;
      }
  return out;
}

class Overlap : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(corpus_dir() + "/manifest.json")) {
      const auto r = test::run_command(test::binary_dir() + "/make_corpus --out " + corpus_dir() +
                                       " --docs 600 --val-docs 60");
      ASSERT_EQ(r.status, 0) << r.output;
    }
  }
  // The tiny test model, DiLoCo alone (no mesh), in this process.
  static std::vector<std::string> alone(const std::string& out, const std::string& overlap, int steps) {
    return {"model.dim=48", "model.ffn_dim=128", "model.head_dim=12", "model.n_layers=2", "train.threads=1",
            "train.steps=" + std::to_string(steps), "train.eval_every=0", "train.log_every=1000",
            "data.train=" + corpus_dir() + "/train_*.bin", "data.val=", "train.out_dir=" + out,
            "diloco.enabled=true", "diloco.inner_steps=4", "diloco.overlap=" + overlap};
  }
};

TEST_F(Overlap, ConfigKeyIsValidated) {
  EXPECT_EQ(load_config("", {}).diloco.overlap, "none");
  for (const char* v : {"none", "eager", "delayed"})
    EXPECT_EQ(load_config("", {std::string("diloco.overlap=") + v}).diloco.overlap, v);
  const std::string e = test::error_of([] { load_config("", {"diloco.overlap=async"}); });
  EXPECT_NE(e.find("diloco.overlap: must be one of \"none\", \"eager\", \"delayed\""), std::string::npos) << e;
  const std::string e2 = test::error_of([] { load_config("", {"diloco.overlap=true"}); });
  EXPECT_NE(e2.find("diloco.overlap"), std::string::npos) << e2;
  EXPECT_EQ(load_config("", {"diloco.overlap=eager"}).diloco.eager_standin, "own");
  EXPECT_EQ(load_config("", {"diloco.overlap=eager", "diloco.eager_standin=fitted"}).diloco.eager_standin, "fitted");
  const std::string e3 = test::error_of([] { load_config("", {"diloco.overlap=delayed", "diloco.eager_standin=fitted"}); });
  EXPECT_NE(e3.find("diloco.eager_standin: applies only to diloco.overlap \"eager\""), std::string::npos) << e3;
  const std::string e4 = test::error_of([] { load_config("", {"diloco.overlap=eager", "diloco.eager_standin=mean"}); });
  EXPECT_NE(e4.find("must be one of \"own\", \"fitted\""), std::string::npos) << e4;
}

// Alone, a node's own pseudo-gradient is the average, so eager overlap's
// stand-in (the outer step its own pseudo-gradient gives) is the outer step
// itself: the run is blocking DiLoCo bit for bit, one round's bookkeeping
// later. The run ends on the outer parameters (the last round is applied at
// the end): the final checkpoint's weights are its outer parameters, with no
// round left in flight. Delayed overlap takes another path (not equal).
TEST_F(Overlap, AloneEagerIsBlockingDilocoBitForBitAndEndsOnTheOuterParameters) {
  const std::string a = fresh_dir("overlap_alone_none"), b = fresh_dir("overlap_alone_eager"),
                    c = fresh_dir("overlap_alone_delayed");
  train(load_config("", alone(a, "none", 12)));
  train(load_config("", alone(b, "eager", 12)));
  train(load_config("", alone(c, "delayed", 12)));
  auto losses = [](const std::string& dir) {
    std::vector<double> v;
    for (const auto& l : read_metrics(dir + "/metrics.jsonl")) v.push_back(l["loss"].get<double>());
    return v;
  };
  EXPECT_EQ(losses(a), losses(b));
  EXPECT_EQ(read_all(a + "/model.safetensors"), read_all(b + "/model.safetensors"));
  EXPECT_NE(losses(a), losses(c)) << "delayed overlap starts rounds elsewhere";
  const auto mb = read_metrics(b + "/metrics.jsonl");
  ASSERT_EQ(mb.size(), 12u);
  EXPECT_TRUE(mb[3].contains("outer_launched")) << mb[3].dump();
  EXPECT_FALSE(mb[3].contains("outer"));
  EXPECT_EQ(mb[7]["outer"]["outer_step"], 1);
  EXPECT_EQ(mb[7]["outer"]["launched"], 2);
  EXPECT_EQ(mb[11]["outer"]["outer_step"], 2);
  EXPECT_EQ(mb[11]["outer_final"]["outer_step"], 3);
  EXPECT_EQ(mb[11]["outer_final"]["overlap"], "eager");
  // The same outer parameters as blocking after each step: the same hashes.
  const auto ma = read_metrics(a + "/metrics.jsonl");
  EXPECT_EQ(mb[7]["outer"]["hash"], ma[3]["outer"]["hash"]);
  EXPECT_EQ(mb[11]["outer"]["hash"], ma[7]["outer"]["hash"]);
  EXPECT_EQ(mb[11]["outer_final"]["hash"], ma[11]["outer"]["hash"]);
  const CheckpointState last = read_checkpoint(b + "/checkpoints/step_00000012");
  EXPECT_EQ(last.outer_in_flight_step, 0);
  EXPECT_TRUE(last.outer_in_flight.empty());
  EXPECT_EQ(last.params, last.outer) << "the run ends on the outer parameters";
}

// A checkpoint taken while a round is in flight holds that round (its
// pseudo-gradient and its outer step); a run stopped there and resumed
// launches it again and continues bit for bit as if it had never stopped
// (the last step is no boundary: the round in flight is applied at the end
// with the progress since kept). A resume with overlap none does that
// round at once and goes on blocking.
TEST_F(Overlap, ACheckpointHoldsTheRoundInFlightAndAResumeLaunchesItAgain) {
  for (const char* overlap : {"eager", "delayed"}) {
    SCOPED_TRACE(overlap);
    const std::string a = fresh_dir(std::string("overlap_resume_a_") + overlap),
                      b = fresh_dir(std::string("overlap_resume_b_") + overlap);
    train(load_config("", alone(a, overlap, 14)));
    auto first = alone(b, overlap, 14);
    first.push_back("train.stop_after_steps=6");  // round 1 (steps 1-4) in flight since step 4
    train(load_config("", first));
    const CheckpointState mid = read_checkpoint(b + "/checkpoints/step_00000006");
    EXPECT_EQ(mid.outer_in_flight_step, 1);
    ASSERT_EQ(mid.outer_in_flight.size(), mid.params.size());
    EXPECT_TRUE(fs::exists(b + "/checkpoints/step_00000006/outer_in_flight.safetensors"));
    auto second = alone(b, overlap, 14);
    second.push_back("ckpt.resume=auto");
    train(load_config("", second));
    auto losses = [](const std::string& dir) {
      std::vector<double> v;
      for (const auto& l : read_metrics(dir + "/metrics.jsonl")) v.push_back(l["loss"].get<double>());
      return v;
    };
    EXPECT_EQ(losses(a), losses(b));
    EXPECT_EQ(read_all(a + "/model.safetensors"), read_all(b + "/model.safetensors"));
    const auto steps = applied_outer_steps(read_metrics(b + "/metrics.jsonl"));
    EXPECT_EQ(steps.size(), 3u);  // 1 (the relaunched one, at step 8), 2 (step 12), 3 (the end)
    EXPECT_EQ(steps.begin()->second["at_step"], 8);
  }
  // An overlapped checkpoint resumed without overlap: the round is done at
  // start, then blocking outer steps go on.
  const std::string c = fresh_dir("overlap_resume_c");
  auto first = alone(c, "eager", 14);
  first.push_back("train.stop_after_steps=6");
  train(load_config("", first));
  auto second = alone(c, "none", 14);
  second.push_back("ckpt.resume=auto");
  const TrainResult r = train(load_config("", second));
  EXPECT_EQ(r.steps, 14);
  const auto steps = applied_outer_steps(read_metrics(c + "/metrics.jsonl"));
  EXPECT_EQ(steps.size(), 2u);  // 2 (step 8) and 3 (step 12); 1 was done at the resume
  EXPECT_EQ(steps.begin()->first, 2);
}

struct SwarmRun {
  int status;
  std::string output;
  std::vector<std::vector<nlohmann::json>> metrics;  // per node
  std::string out;
};

SwarmRun run_swarm(int nodes, const std::string& name, const std::vector<std::string>& sets) {
  SwarmRun r;
  r.out = fresh_dir(name);  // a coordinator restores the state it finds there: always fresh
  std::string cmd = test::binary_dir() + "/intellect_train --local-nodes " + std::to_string(nodes);
  for (const std::string& s :
       {"train.out_dir=" + r.out, std::string("train.threads=1"), std::string("model.dim=48"),
        std::string("model.ffn_dim=128"), std::string("model.head_dim=12"), std::string("model.n_layers=2"),
        std::string("train.eval_every=0"), std::string("train.log_every=1000"),
        "data.train=" + corpus_dir() + "/train_*.bin", "data.val=" + corpus_dir() + "/val_*.bin",
        std::string("ckpt.save_final=false")})
    cmd += " --set " + s;
  for (const std::string& s : sets) cmd += " --set " + s;
  const test::CommandResult c = test::run_command(cmd);
  r.status = c.status;
  r.output = c.output;
  for (int i = 0; i < nodes; ++i) r.metrics.push_back(read_metrics(r.out + "/node-" + std::to_string(i) + "/metrics.jsonl"));
  return r;
}

// Three nodes, eager overlap: at every applied outer step (one round after
// its all-reduce started) every node has the same hash; the run ends on the
// same weights on every node; each applied step carries its parts and the
// time the training thread was held. The same run blocking (same tokens:
// each node reads its partition, no step is skipped): the final validation
// loss of the overlapped run is within a few percent of it.
TEST_F(Overlap, ThreeNodesAgreeAtEveryAppliedStepEndAlikeAndLearnLikeBlocking) {
  const std::vector<std::string> sets = {"train.steps=48", "diloco.inner_steps=6"};
  std::vector<std::string> eager_sets = sets, none_sets = sets;
  eager_sets.push_back("diloco.overlap=eager");
  none_sets.push_back("diloco.overlap=none");
  const SwarmRun e = run_swarm(3, "overlap_swarm_eager", eager_sets);
  ASSERT_EQ(e.status, 0) << e.output;
  EXPECT_NE(e.output.find("outer steps where all nodes agreed: 8, diverged: 0"), std::string::npos) << e.output;
  std::vector<std::map<int64_t, nlohmann::json>> steps;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(e.metrics[i].size(), 48u);
    steps.push_back(applied_outer_steps(e.metrics[i]));
    ASSERT_EQ(steps[i].size(), 8u) << "node " << i;
    EXPECT_TRUE(e.metrics[i][5].contains("outer_launched"));
    EXPECT_EQ(e.metrics[i][5]["outer_launched"]["launched"], 1);
  }
  for (int64_t k = 1; k <= 8; ++k) {
    const auto& o = steps[0][k];
    // Outer step k is applied at the end of round k + 1 (the last one at the end).
    EXPECT_EQ(o["at_step"].get<int64_t>(), std::min<int64_t>(48, 6 * (k + 1))) << "outer step " << k;
    EXPECT_EQ(o["ring_size"], 3);
    EXPECT_EQ(o["way"], "ring");
    EXPECT_EQ(o["overlap"], "eager");
    EXPECT_GE(o["outer_blocked_s"].get<double>(), 0.0);
    EXPECT_GT(o["allreduce_s"].get<double>(), 0.0);
    // The link to the ring successor as the round measured it (ring order by rate).
    EXPECT_GT(o["link_mbit"].get<double>(), 0.0);
    EXPECT_NE(o["link_to"].get<uint64_t>(), 0u);
    for (const char* part : {"wait_s", "outer_step_s", "upload_s", "check_s", "publish_s",
                             "ring_encode_s", "ring_recv_wait_s", "ring_decode_s", "ring_send_s"})
      EXPECT_GE(o["parts"][part].get<double>(), 0.0) << part << " of outer step " << k;
    for (int i = 1; i < 3; ++i) EXPECT_EQ(steps[i][k]["hash"], o["hash"]) << "node " << i << ", outer step " << k;
  }
  const std::string w0 = read_all(e.out + "/node-0/model.safetensors");
  ASSERT_FALSE(w0.empty());
  for (int i = 1; i < 3; ++i)
    EXPECT_EQ(read_all(e.out + "/node-" + std::to_string(i) + "/model.safetensors"), w0) << "node " << i;
  for (int i = 0; i < 3; ++i) {
    const std::string log = read_all(e.out + "/node-" + std::to_string(i) + "/train.log");
    EXPECT_NE(log.find("compute utilization"), std::string::npos);
    EXPECT_NE(log.find("DiLoCo host memory (overlap eager): 4 fp32 copies"), std::string::npos);
  }

  const SwarmRun n = run_swarm(3, "overlap_swarm_none", none_sets);
  ASSERT_EQ(n.status, 0) << n.output;
  // Blocking rounds run in place: three fp32 copies of the model, not four.
  for (int i = 0; i < 3; ++i)
    EXPECT_NE(read_all(n.out + "/node-" + std::to_string(i) + "/train.log").find("DiLoCo host memory: 3 fp32 copies"),
              std::string::npos);
  const double val_e = e.metrics[0].back()["val_loss"].get<double>();
  const double val_n = n.metrics[0].back()["val_loss"].get<double>();
  for (int i = 1; i < 3; ++i) {  // evaluated after the last outer step: the same weights on every node
    EXPECT_EQ(e.metrics[i].back()["val_loss"].get<double>(), val_e);
    EXPECT_EQ(n.metrics[i].back()["val_loss"].get<double>(), val_n);
  }
  std::printf("3 nodes, 48 steps, 8 outer steps: final validation loss eager %.4f, none %.4f (%+.2f%%)\n", val_e,
              val_n, 100.0 * (val_e / val_n - 1.0));
  EXPECT_LT(val_e, n.metrics[0].front()["loss"].get<double>() - 1.5) << "it learned";
  EXPECT_NEAR(val_e / val_n, 1.0, 0.05) << "eager overlap within 5% of blocking DiLoCo";
}

// Eager with the fitted stand-in (diloco.eager_standin fitted): the nodes
// still agree at every applied step and end alike (the stand-in is local;
// the outer step uses the average), each applied step reports the scale
// its successor started from, fitted from the round before (in [0, 1], 1
// before any fit, and below 1 once three nodes' δs disagree), and it learns.
TEST_F(Overlap, FittedStandinAgreesReportsItsScaleAndLearns) {
  const SwarmRun f = run_swarm(3, "overlap_swarm_fitted", {"train.steps=48", "diloco.inner_steps=6",
                                                           "diloco.overlap=eager", "diloco.eager_standin=fitted"});
  ASSERT_EQ(f.status, 0) << f.output;
  EXPECT_NE(f.output.find("outer steps where all nodes agreed: 8, diverged: 0"), std::string::npos) << f.output;
  std::vector<std::map<int64_t, nlohmann::json>> steps;
  for (int i = 0; i < 3; ++i) steps.push_back(applied_outer_steps(f.metrics[i]));
  int below_one = 0;
  for (int64_t k = 1; k <= 8; ++k) {
    for (int i = 1; i < 3; ++i) EXPECT_EQ(steps[i][k]["hash"], steps[0][k]["hash"]) << "node " << i << ", step " << k;
    if (k == 8) continue;  // the last is landed at the end: no next round
    for (int i = 0; i < 3; ++i) {
      const auto& sc = steps[i][k]["standin_scale"];
      const double applied = sc["applied"].get<double>(), next = sc["next"].get<double>();
      EXPECT_GE(next, 0.0);
      EXPECT_LE(next, 1.0);
      if (k == 1) {
        EXPECT_EQ(applied, 1.0) << "the first round started before any fit";
      } else {
        EXPECT_EQ(applied, steps[i][k - 1]["standin_scale"]["next"].get<double>());
      }
      if (next < 1.0) ++below_one;
    }
  }
  EXPECT_GT(below_one, 0) << "three nodes' pseudo-gradients never disagreed";
  const std::string w0 = read_all(f.out + "/node-0/model.safetensors");
  for (int i = 1; i < 3; ++i) EXPECT_EQ(read_all(f.out + "/node-" + std::to_string(i) + "/model.safetensors"), w0);
  EXPECT_LT(f.metrics[0].back()["val_loss"].get<double>(), f.metrics[0].front()["loss"].get<double>() - 1.5);
}

// diloco.apply_on_arrival: each round's average is applied after the first
// inner step at which it has arrived, not at the next boundary: between
// boundaries, on every node, with the same hash everywhere; the run ends
// alike on every node and learns; the key is refused without overlap.
TEST_F(Overlap, ApplyOnArrivalLandsEachRoundBetweenBoundariesAndAgrees) {
  const SwarmRun a = run_swarm(3, "overlap_swarm_arrival", {"train.steps=48", "diloco.inner_steps=6",
                                                            "diloco.overlap=eager", "diloco.apply_on_arrival=true"});
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_NE(a.output.find("outer steps where all nodes agreed: 8, diverged: 0"), std::string::npos) << a.output;
  int early = 0;
  std::vector<std::map<int64_t, nlohmann::json>> steps;
  for (int i = 0; i < 3; ++i) {
    steps.push_back(applied_outer_steps(a.metrics[i]));
    ASSERT_EQ(steps[i].size(), 8u) << "node " << i;
    for (const auto& [k, o] : steps[i]) {
      const int64_t at = o["at_step"].get<int64_t>();
      // (the last round is launched at the last step and landed there)
      EXPECT_TRUE(at > 6 * k || (k == 8 && at == 48)) << "outer step " << k << " applied at step " << at;
      EXPECT_LE(at, std::min<int64_t>(48, 6 * (k + 1))) << "outer step " << k << " later than the next boundary";
      if (o.value("applied_on_arrival", false)) {
        ++early;
        EXPECT_NE(at % 6, 0) << "applied on arrival at a boundary";
      }
    }
  }
  EXPECT_GT(early, 0) << "no round was applied before the next boundary";
  for (int64_t k = 1; k <= 8; ++k)
    for (int i = 1; i < 3; ++i) EXPECT_EQ(steps[i][k]["hash"], steps[0][k]["hash"]) << "node " << i << ", step " << k;
  const std::string w0 = read_all(a.out + "/node-0/model.safetensors");
  for (int i = 1; i < 3; ++i) EXPECT_EQ(read_all(a.out + "/node-" + std::to_string(i) + "/model.safetensors"), w0);
  const double val = a.metrics[0].back()["val_loss"].get<double>();
  std::printf("3 nodes, 48 steps, eager with apply_on_arrival: final validation loss %.4f (%d of 24 applied early)\n",
              val, early);
  EXPECT_LT(val, a.metrics[0].front()["loss"].get<double>() - 1.5);
  const std::string e = test::error_of([] { load_config("", {"diloco.apply_on_arrival=true"}); });
  EXPECT_NE(e.find("diloco.apply_on_arrival: applies only with diloco.overlap"), std::string::npos) << e;
}

// diloco.apply_after_steps: each round's average is applied exactly τ inner
// steps after its launch on every node (waited for if late), so two runs of
// the same swarm end on the same bits whatever the timing; the key is
// refused without overlap and at τ ≥ inner_steps.
TEST_F(Overlap, ApplyAfterStepsLandsEachRoundAtTheSameStepOnEveryNodeAndRepeats) {
  const std::vector<std::string> sets = {"train.steps=48", "diloco.inner_steps=6", "diloco.overlap=eager",
                                         "diloco.apply_after_steps=2"};
  const SwarmRun a = run_swarm(3, "overlap_swarm_after", sets);
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_NE(a.output.find("outer steps where all nodes agreed: 8, diverged: 0"), std::string::npos) << a.output;
  std::vector<std::map<int64_t, nlohmann::json>> steps;
  for (int i = 0; i < 3; ++i) {
    steps.push_back(applied_outer_steps(a.metrics[i]));
    ASSERT_EQ(steps[i].size(), 8u) << "node " << i;
    for (const auto& [k, o] : steps[i]) {
      const int64_t at = o["at_step"].get<int64_t>();
      if (k == 8) {  // launched at the last step and landed there
        EXPECT_EQ(at, 48);
        continue;
      }
      EXPECT_EQ(at, 6 * k + 2) << "node " << i << ": outer step " << k;
      EXPECT_EQ(o.value("applied_after_steps", int64_t{-1}), 2) << "node " << i << ": outer step " << k;
      EXPECT_FALSE(o.value("applied_on_arrival", true));
    }
  }
  for (int64_t k = 1; k <= 8; ++k)
    for (int i = 1; i < 3; ++i) EXPECT_EQ(steps[i][k]["hash"], steps[0][k]["hash"]) << "node " << i << ", step " << k;
  const std::string w0 = read_all(a.out + "/node-0/model.safetensors");
  for (int i = 1; i < 3; ++i) EXPECT_EQ(read_all(a.out + "/node-" + std::to_string(i) + "/model.safetensors"), w0);
  EXPECT_LT(a.metrics[0].back()["val_loss"].get<double>(), a.metrics[0].front()["loss"].get<double>() - 1.5);
  // The same swarm over links 500 ms one way: each round (4 hops, 2 s) now
  // outlasts two inner steps, so every node waits at step 6k + 2 (time it
  // reports as held), and still ends on the same bits. (At 250 ms, two inner
  // steps on a loaded 2-core machine sometimes took as long as the round.)
  std::vector<std::string> slow = sets;
  slow.push_back("mesh.emulate_link_delay_ms=500");
  const SwarmRun b = run_swarm(3, "overlap_swarm_after_slow", slow);
  ASSERT_EQ(b.status, 0) << b.output;
  EXPECT_EQ(read_all(b.out + "/node-0/model.safetensors"), w0) << "apply_after_steps made the result depend on timing";
  double held = 0.0;
  for (const auto& [k, o] : applied_outer_steps(b.metrics[0])) {
    if (k == 8) continue;
    EXPECT_EQ(o["at_step"].get<int64_t>(), 6 * k + 2) << "outer step " << k << " over the slow link";
    held += o["outer_blocked_s"].get<double>();
  }
  EXPECT_GT(held, 7 * 0.1) << "no node waited for a round at its due step over 500 ms links";
  std::string e = test::error_of([] { load_config("", {"diloco.apply_after_steps=2"}); });
  EXPECT_NE(e.find("diloco.apply_after_steps: applies only with diloco.overlap"), std::string::npos) << e;
  e = test::error_of([] {
    load_config("", {"diloco.overlap=eager", "diloco.inner_steps=6", "diloco.apply_after_steps=6"});
  });
  EXPECT_NE(e.find("a round must be applied before the next boundary"), std::string::npos) << e;
}

// Two nodes over emulated WAN links (200 Mbit/s, 60 +- 10 ms one way):
// they agree at every applied step, each all-reduce pays the links' latency,
// and it runs while the inner steps do: the node the ring waits for (the
// slower one) is hardly held at all, where blocking DiLoCo holds every node
// for at least the whole all-reduce.
TEST_F(Overlap, TwoNodesOverEmulatedWanLinksAgreeAndHideTheAllReduce) {
  const SwarmRun r = run_swarm(2, "overlap_wan", {"train.steps=30", "diloco.inner_steps=6", "diloco.overlap=eager",
                                                  "mesh.emulate_link_mbit=200", "mesh.emulate_link_delay_ms=60",
                                                  "mesh.emulate_link_jitter_ms=10"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("agreed: 5, diverged: 0"), std::string::npos) << r.output;
  double least_waited = 1e9, allreduce_of_that = 0;
  for (int i = 0; i < 2; ++i) {
    const auto steps = applied_outer_steps(r.metrics[i]);
    ASSERT_EQ(steps.size(), 5u);
    double waited = 0, allreduce = 0;
    for (const auto& [k, o] : steps) {
      EXPECT_EQ(o["hash"], applied_outer_steps(r.metrics[1 - i]).at(k)["hash"]) << "outer step " << k;
      EXPECT_GE(o["allreduce_s"].get<double>(), 2 * 0.050) << "outer step " << k;
      if (k < 5) {  // the last is waited for at the end, by design
        waited += o["parts"]["wait_s"].get<double>();
        allreduce += o["allreduce_s"].get<double>();
      }
    }
    std::printf("node %d: waited %.3f s for rounds whose all-reduce took %.3f s\n", i, waited, allreduce);
    if (waited < least_waited) {
      least_waited = waited;
      allreduce_of_that = allreduce;
    }
  }
  EXPECT_LT(least_waited, 0.5 * allreduce_of_that);
}

}  // namespace
}  // namespace intellect
