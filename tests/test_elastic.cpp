// Elastic membership on loopback, with real intellect_train processes and an
// in-process coordinator: a node that starts while the run is in progress
// streams the state from a donor (a chunk corrupted on the way is fetched
// again), catches up on the rounds it missed, and from then on ends every
// outer step with the same hash as the others; nobody waits for it.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <map>
#include <mutex>
#include <filesystem>
#include <iterator>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint.h"
#include "dist/coordinator.h"
#include "test_util.h"
#include "util/file.h"

namespace intellect {
namespace {

using std::chrono::milliseconds;

std::string corpus_dir() { return ::testing::TempDir() + "/elastic_corpus"; }

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream f(path);
  for (std::string l; std::getline(f, l);) lines.push_back(nlohmann::json::parse(l));
  return lines;
}

// An intellect_train node of the tiny test run, as a shell command.
std::string train_command(const std::string& root, const std::string& name, uint16_t coordinator_port,
                          const std::string& env, int steps, const std::vector<std::string>& extra = {}) {
  std::string cmd = env + " " + test::binary_dir() + "/intellect_train";
  for (const std::string& s :
       {"train.out_dir=" + root + "/" + name, "mesh.name=" + name, "mesh.secret_file=" + root + "/secret",
        "mesh.coordinator=127.0.0.1:" + std::to_string(coordinator_port), std::string("mesh.heartbeat_ms=300"),
        std::string("mesh.round_timeout_ms=20000"), std::string("diloco.enabled=true"),
        std::string("diloco.inner_steps=5"), "train.steps=" + std::to_string(steps), std::string("train.threads=1"),
        std::string("model.dim=48"), std::string("model.ffn_dim=128"), std::string("model.head_dim=12"),
        std::string("model.n_layers=2"), std::string("train.eval_every=0"), std::string("train.log_every=1000"),
        "data.train=" + corpus_dir() + "/train_*.bin", std::string("data.val="), std::string("data.partitions=3"),
        std::string("ckpt.save_final=false")})
    cmd += " --set " + s;
  for (const std::string& s : extra) cmd += " --set " + s;
  return cmd;
}

// A run directory with its secret, and a coordinator for it on loopback.
struct TestRun {
  std::string root;
  std::vector<uint8_t> key = std::vector<uint8_t>(32, 0x42);
  CoordinatorOptions options;
  TestRun(const std::string& name) : root(::testing::TempDir() + "/" + name) {
    std::filesystem::remove_all(root);
    make_dirs(root);
    write_file_atomic(root + "/secret", key.data(), key.size());
    ::chmod((root + "/secret").c_str(), 0600);
    options.credentials = RunSecret(key, "test secret");
    options.heartbeat_interval = milliseconds(300);
    options.membership.heartbeat_timeout = milliseconds(3000);
    options.log = [](const std::string& m) { if (std::getenv("MESH_LOG")) std::fprintf(stderr, "[coord] %s\n", m.c_str()); };
  }
};

// Two nodes of the test run, then a third ("joiner") once the run is two
// outer steps in; every process runs to its end and the coordinator stops.
struct JoinRun {
  bool got_going = false;  // the first two reached outer step 2 (else no joiner started)
  std::vector<test::CommandResult> results = std::vector<test::CommandResult>(3);
  int64_t disagreed_steps = 0;
};
JoinRun run_two_then_a_joiner(TestRun& run, const std::string& donor_env, int steps,
                              const std::vector<std::string>& extra = {}) {
  run.options.membership.ready_timeout = milliseconds(20000);
  run.options.membership.min_ring = 2;
  Coordinator coordinator(run.options);
  std::atomic<bool> stop{false};
  std::thread ct([&] { coordinator.run(stop); });
  auto command = [&](const std::string& name, const std::string& env) {
    return train_command(run.root, name, coordinator.port(), env, steps, extra);
  };
  JoinRun out;
  std::vector<std::thread> nodes;
  for (int i = 0; i < 2; ++i)
    nodes.emplace_back([&, i] { out.results[i] = test::run_command(command("node-" + std::to_string(i), donor_env)); });
  for (int t = 0; t < 600 && coordinator.agreed_steps() < 2; ++t) std::this_thread::sleep_for(milliseconds(100));
  out.got_going = coordinator.agreed_steps() >= 2;
  if (out.got_going) nodes.emplace_back([&] { out.results[2] = test::run_command(command("joiner", "")); });
  for (auto& t : nodes) t.join();
  stop = true;
  ct.join();
  out.disagreed_steps = coordinator.disagreed_steps();
  return out;
}

class Elastic : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(corpus_dir() + "/manifest.json")) {
      const auto r = test::run_command(test::binary_dir() + "/make_corpus --out " + corpus_dir() +
                                       " --docs 600 --val-docs 0");
      ASSERT_EQ(r.status, 0) << r.output;
    }
  }
};

TEST_F(Elastic, NodeJoiningMidRunStreamsTheStateAndAgreesFromThen) {
  TestRun run("elastic_join");
  const std::string& root = run.root;
  // Both donors corrupt the first chunk they serve: the joiner must fetch it again.
  const JoinRun jr = run_two_then_a_joiner(run, "INTELLECT_STATE_TEST_CORRUPT=0", 60);
  ASSERT_TRUE(jr.got_going) << "the first two nodes did not get going";
  for (int i = 0; i < 3; ++i) ASSERT_EQ(jr.results[i].status, 0) << jr.results[i].output;
  EXPECT_EQ(jr.disagreed_steps, 0);
  const auto a = read_metrics(root + "/node-0/metrics.jsonl");
  const auto j = read_metrics(root + "/joiner/metrics.jsonl");
  ASSERT_EQ(a.size(), 60u);
  ASSERT_FALSE(j.empty());
  ASSERT_TRUE(j.front().contains("joined")) << j.front().dump();
  const auto& joined = j.front()["joined"];
  EXPECT_GE(joined["outer_step"].get<int64_t>(), 2);
  EXPECT_GE(joined["bad_chunks_refetched"].get<int64_t>(), 1) << "the corrupted chunk was noticed";
  // It lined up with the others: its first step is inside the round after the one it joined at.
  EXPECT_EQ(j.front()["step"], joined["first_step"]);
  EXPECT_GT(j.front()["step"].get<int64_t>(), joined["outer_step"].get<int64_t>() * 5);
  EXPECT_LE(j.front()["step"].get<int64_t>(), joined["outer_step"].get<int64_t>() * 5 + 5);
  EXPECT_EQ(j.back()["step"], 60);
  // From its first outer step on, the joiner's outer parameters are the others'.
  std::map<int64_t, std::string> hash_a;
  for (const auto& l : a)
    if (l.contains("outer")) hash_a[l["outer"]["outer_step"].get<int64_t>()] = l["outer"]["hash"];
  int compared = 0, in_ring = 0;
  for (const auto& l : j) {
    if (!l.contains("outer")) continue;
    const int64_t k = l["outer"]["outer_step"].get<int64_t>();
    EXPECT_EQ(l["outer"]["hash"], hash_a[k]) << "outer step " << k;
    ++compared;
    in_ring += !l["outer"]["late"].get<bool>() && l["outer"]["ring_size"].get<int64_t>() == 3;
  }
  EXPECT_GE(compared, 3);
  EXPECT_GE(in_ring, 2) << "the joiner took part in the rings once it had caught up";
  EXPECT_LT(j.back()["loss"].get<double>(), a.front()["loss"].get<double>() - 1.0) << "and it learned";
}

// Stripes end to end: the state cut into 64 KiB chunks and every link
// emulated slow enough that the download takes seconds, a joiner takes part
// of the snapshot's shared half (outer parameters and momentum) from the node
// that is not its donor, and agrees with everyone from its first ring on.
// A further donor helps only while it is still at the donor's outer step,
// and a round of this tiny model takes about 0.3 s: on a loaded machine the
// node the Welcome named has sometimes moved on before the joiner asks, and
// rightly refuses (the log says so, and the donor sends everything). So up
// to three runs, each checked in full; in at least one the further donor
// must have sent chunks.
TEST_F(Elastic, AJoinerTakesPartOfTheSharedStateFromAFurtherDonor) {
  int64_t helped = 0;
  for (int attempt = 0; attempt < 3 && helped == 0; ++attempt) {
    SCOPED_TRACE(::testing::Message() << "attempt " << attempt + 1);
    TestRun run("elastic_stripes_" + std::to_string(attempt));
    const std::string& root = run.root;
    // 1.2 MB of state at 4 Mbit/s: about 2.4 s, for the joiner's downlink
    // too, and its catch-up after: 150 steps (30 rounds) leave it rounds to
    // take part in (at 50 it once joined at the last one).
    const JoinRun jr = run_two_then_a_joiner(run, "", 150, {"mesh.state_chunk_kib=64", "mesh.emulate_link_mbit=4"});
    ASSERT_TRUE(jr.got_going) << "the first two nodes did not get going";
    const std::vector<test::CommandResult>& results = jr.results;
    for (int i = 0; i < 3; ++i) ASSERT_EQ(results[i].status, 0) << results[i].output;
    EXPECT_EQ(jr.disagreed_steps, 0);
    const auto j = read_metrics(root + "/joiner/metrics.jsonl");
    ASSERT_FALSE(j.empty());
    ASSERT_TRUE(j.front().contains("joined")) << j.front().dump();
    const auto& joined = j.front()["joined"];
    EXPECT_GT(joined["chunks"].get<int64_t>(), 10) << "the state was cut into 64 KiB chunks";
    helped = joined["chunks_from_further_donors"].get<int64_t>();
    EXPECT_LT(helped, joined["chunks"].get<int64_t>() / 2 + 1) << "only the shared half can come from a further donor";
    EXPECT_NE(results[2].output.find("further donor"), std::string::npos) << "the log says where the state came from";
    const auto a = read_metrics(root + "/node-0/metrics.jsonl");
    std::map<int64_t, std::string> hash_a;
    for (const auto& l : a)
      if (l.contains("outer")) hash_a[l["outer"]["outer_step"].get<int64_t>()] = l["outer"]["hash"];
    int compared = 0;
    for (const auto& l : j)
      if (l.contains("outer")) {
        EXPECT_EQ(l["outer"]["hash"], hash_a[l["outer"]["outer_step"].get<int64_t>()]);
        ++compared;
      }
    EXPECT_GE(compared, 2) << "the joiner took part in outer steps after it joined";
  }
  EXPECT_GE(helped, 1) << "in three runs the further donor never sent a chunk";
}

// Every node holding the run's newest state dies at once (kill -9 of both),
// and the nodes started next have nothing newer than their own step 0: the
// coordinator finds no live holder of the newest outer step and rewinds the
// run to the newest step a live node holds. The new nodes, first told they
// are late and finding no donor, go on from their own state together, agree
// on every outer step they repeat, and finish, instead of waiting for a
// donor forever. Then, with those gone too, a first node comes back with
// ckpt.resume=auto: the run goes back to its checkpoint's outer step, and a
// fresh node takes that state from it.
TEST_F(Elastic, RunGoesBackToTheNewestStateALiveNodeHoldsWhenEveryHolderIsGone) {
  TestRun run("elastic_rewind");
  const std::string& root = run.root;
  run.options.membership.ready_timeout = milliseconds(20000);
  // Rings of two: after the second rewind the node going on from its own
  // state waits for the fresh one, which needs a snapshot from it first
  // (taken as it goes back, since it cannot take one while it waits).
  run.options.membership.min_ring = 2;
  run.options.rewind_after = milliseconds(2000);
  std::vector<std::string> log;
  std::mutex log_mu;
  run.options.log = [&](const std::string& m) {
    std::lock_guard<std::mutex> lock(log_mu);
    log.push_back(m);
    if (std::getenv("MESH_LOG")) std::fprintf(stderr, "[coord] %s\n", m.c_str());
  };
  Coordinator coordinator(run.options);
  std::atomic<bool> stop{false};
  std::thread ct([&] { coordinator.run(stop); });
  // Each node's pid, so the test can kill it.
  auto start = [&](const std::string& name, int steps, test::CommandResult* result) {
    const std::string cmd = "echo $$ > " + root + "/" + name + ".pid; exec " +
                            train_command(root, name, coordinator.port(), "", steps, {"ckpt.every=15"});
    return std::thread([cmd, result] { *result = test::run_command(cmd); });
  };
  auto pid_of = [&](const std::string& name) {
    std::ifstream f(root + "/" + name + ".pid");
    pid_t pid = 0;
    f >> pid;
    return pid;
  };
  std::vector<test::CommandResult> results(4);
  std::vector<std::thread> nodes;
  nodes.push_back(start("a", 100000, &results[0]));
  nodes.push_back(start("b", 100000, &results[1]));
  for (int t = 0; t < 600 && coordinator.agreed_steps() < 3; ++t) std::this_thread::sleep_for(milliseconds(100));
  ASSERT_GE(coordinator.agreed_steps(), 3) << "the first two nodes did not get going";
  // "a" has its checkpoint of step 15 (outer step 3) complete on disk before
  // it dies: the directory appears before its COMPLETE marker, and a kill in
  // between leaves a checkpoint resume rightly skips.
  const std::string a_ckpt_done = root + "/a/checkpoints/step_00000015/COMPLETE";
  for (int t = 0; t < 600 && !std::filesystem::exists(a_ckpt_done); ++t)
    std::this_thread::sleep_for(milliseconds(100));
  ASSERT_TRUE(std::filesystem::exists(a_ckpt_done));
  ASSERT_GT(pid_of("a"), 0);
  ASSERT_GT(pid_of("b"), 0);
  ::kill(pid_of("a"), SIGKILL);
  ::kill(pid_of("b"), SIGKILL);
  nodes[0].join();
  nodes[1].join();
  const int64_t lost_at = coordinator.agreed_steps();
  nodes.push_back(start("c", 30, &results[2]));
  nodes.push_back(start("d", 30, &results[3]));
  nodes[2].join();
  nodes[3].join();
  // Both holders gone again; now "a" comes back from its own checkpoint
  // (ckpt.resume=auto, its newest at step 15k, outer step 3k) with a fresh
  // node: the run goes back to what that checkpoint holds, not to step 0.
  std::vector<test::CommandResult> again(2);
  // A ring here may wait the coordinator's whole ready_timeout (20 s) for the
  // fresh node, which first fetches a snapshot from "a": the nodes' own
  // round_timeout must outlast it, or under load "a" gives up just as its
  // ring is announced.
  const std::string resume_cmd = "exec " + train_command(root, "a", coordinator.port(), "", 75,
                                                         {"ckpt.every=15", "ckpt.resume=auto",
                                                          "mesh.round_timeout_ms=60000"});
  std::thread ta([&] { again[0] = test::run_command(resume_cmd); });
  std::thread te([&] {
    again[1] = test::run_command(
        "exec " + train_command(root, "e", coordinator.port(), "", 75, {"mesh.round_timeout_ms=60000"}));
  });
  ta.join();
  te.join();
  stop = true;
  ct.join();
  ASSERT_EQ(again[0].status, 0) << again[0].output;
  ASSERT_EQ(again[1].status, 0) << again[1].output;
  EXPECT_NE(again[0].output.find("resuming from"), std::string::npos) << again[0].output;
  std::map<std::pair<int64_t, int64_t>, std::string> hash_a;
  int64_t first_a = -1;
  for (const auto& l : read_metrics(root + "/a/metrics.jsonl"))
    if (l.contains("outer") && l["outer"]["rewinds"].get<int64_t>() >= 2) {
      if (first_a < 0) first_a = l["outer"]["outer_step"].get<int64_t>();
      hash_a[{l["outer"]["rewinds"].get<int64_t>(), l["outer"]["outer_step"].get<int64_t>()}] = l["outer"]["hash"];
    }
  EXPECT_GE(first_a, 4) << "the resumed node went on from its checkpoint's outer step (3 or later), not from 0";
  int compared_e = 0;
  for (const auto& l : read_metrics(root + "/e/metrics.jsonl"))
    if (l.contains("outer") && !l["outer"]["late"].get<bool>()) {
      const auto key = std::make_pair(l["outer"]["rewinds"].get<int64_t>(), l["outer"]["outer_step"].get<int64_t>());
      if (!hash_a.count(key)) continue;
      EXPECT_EQ(l["outer"]["hash"], hash_a[key]) << "outer step " << key.second;
      ++compared_e;
    }
  EXPECT_GE(compared_e, 2) << "the fresh node took the resumed state and agreed with it";

  ASSERT_EQ(results[2].status, 0) << results[2].output;
  ASSERT_EQ(results[3].status, 0) << results[3].output;
  EXPECT_EQ(coordinator.disagreed_steps(), 0);
  bool rewound = false;
  for (const std::string& m : log) rewound |= m.find("RUN REWOUND") != std::string::npos;
  EXPECT_TRUE(rewound) << "the coordinator never rewound the run";
  // Both new nodes went on from their own step 0 and agree on every outer
  // step they did again; nobody waited for a donor that could not exist.
  std::map<int64_t, std::string> hash_c;
  int64_t rewinds_seen = 0;
  for (const auto& l : read_metrics(root + "/c/metrics.jsonl"))
    if (l.contains("outer")) {
      hash_c[l["outer"]["outer_step"].get<int64_t>()] = l["outer"]["hash"];
      rewinds_seen = std::max(rewinds_seen, l["outer"]["rewinds"].get<int64_t>());
    }
  EXPECT_EQ(rewinds_seen, 1);
  EXPECT_EQ(hash_c.size(), 6u) << "outer steps 1..6 of a 30-step run";
  int compared = 0;
  for (const auto& l : read_metrics(root + "/d/metrics.jsonl"))
    if (l.contains("outer")) {
      const int64_t k = l["outer"]["outer_step"].get<int64_t>();
      EXPECT_EQ(l["outer"]["hash"], hash_c[k]) << "outer step " << k;
      ++compared;
    }
  EXPECT_EQ(compared, 6);
  EXPECT_GE(lost_at, 3);
}

// The short chaos run (the long one is a documented command): a coordinator
// and three nodes for 45 s under kill -9 (one, and half the nodes at once),
// SIGSTOP/SIGCONT, new nodes and coordinator restarts; intellect_chaos checks
// hashes, hangs, crashes and loss. Its summary, checked here, for `args`.
nlohmann::json chaos_short_run(const std::string& name, const std::string& args) {
  const std::string out = ::testing::TempDir() + "/" + name;
  const auto r = test::run_command(test::binary_dir() + "/intellect_chaos --seconds 45 --seed 5 " + args + " --out " + out);
  EXPECT_EQ(r.status, 0) << r.output;
  std::ifstream f(out + "/chaos_summary.json");
  if (!f) return {};
  const nlohmann::json s = nlohmann::json::parse(f);
  for (const char* kind : {"kill9", "stop", "start", "coordinator_restart", "kill_half"})
    EXPECT_GE(s["faults"][kind].get<int>(), 1) << kind;
  EXPECT_EQ(s["diverged"], 0);
  EXPECT_GE(s["outer_steps"].get<int>(), 5);
  EXPECT_FALSE(s["joins"].empty()) << "a node started mid-run joined with the run's state";
  EXPECT_LT(s["loss_last"].get<double>(), s["loss_first"].get<double>());
  return s;
}

TEST_F(Elastic, ChaosShortRunKeepsEveryNodeInAgreement) { chaos_short_run("chaos_short", ""); }

// The short chaos run once more with every node overlapping its rounds
// (diloco.overlap=eager): the same faults now land while a round is in
// flight on a node's round thread, and every applied outer step still agrees.
TEST_F(Elastic, ChaosShortRunWithOverlapKeepsEveryNodeInAgreement) {
  const nlohmann::json s = chaos_short_run("chaos_short_overlap", "--overlap eager");
  EXPECT_EQ(s.value("overlap", ""), "eager");
}

// The short chaos run with every node on the direct pattern
// (diloco.all_reduce=direct): a killed or stopped node now fails every
// member's round at once, and the round is re-formed without it.
TEST_F(Elastic, ChaosShortRunWithTheDirectPatternKeepsEveryNodeInAgreement) {
  const std::string out = ::testing::TempDir() + "/chaos_short_direct";
  const nlohmann::json s = chaos_short_run("chaos_short_direct", "--all-reduce direct");
  EXPECT_EQ(s.value("all_reduce", ""), "direct");
  // Every node ran the pattern (it says so at start).
  int said = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(out))
    if (e.path().filename() == "train.log") {
      std::ifstream log(e.path());
      const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      said += text.find("over the direct pattern") != std::string::npos;
    }
  EXPECT_GE(said, 3);
}

// Both nodes of an overlapping run (diloco.overlap=eager) are killed (kill -9)
// while outer step 3's all-reduce runs on their round threads, and started
// again with ckpt.resume=auto. Their newest checkpoint (step 14) was taken
// while outer step 2's round was in flight: it holds that round's
// pseudo-gradient, and the resumed nodes launch it again. Nobody else holds
// the run's newest step, so the coordinator rewinds the run to outer step 1
// (what the checkpoints hold) and the two redo outer step 2 from their own
// saved pseudo-gradients. No outer step is lost: each node's metrics show
// outer steps 1..8, each once, in order, the resumed ones agreeing, and
// both end on the same weights.
TEST_F(Elastic, KillDuringAnOverlappedRoundLosesNoOuterStep) {
  TestRun run("elastic_overlap_kill");
  const std::string& root = run.root;
  run.options.membership.ready_timeout = milliseconds(20000);
  run.options.membership.min_ring = 2;
  run.options.rewind_after = milliseconds(2000);
  Coordinator coordinator(run.options);
  std::atomic<bool> stop{false};
  std::thread ct([&] { coordinator.run(stop); });
  const std::vector<std::string> sets = {"diloco.overlap=eager", "ckpt.every=7"};
  std::vector<test::CommandResult> first(2), second(2);
  std::vector<std::thread> nodes;
  for (int i = 0; i < 2; ++i) {
    const std::string name = i == 0 ? "a" : "b";
    nodes.emplace_back([&, i, name] {
      first[i] = test::run_command(train_command(root, name, coordinator.port(),
                                                 "INTELLECT_MESH_TEST_KILL=" + name + ":3", 40, sets));
    });
  }
  for (auto& t : nodes) t.join();
  nodes.clear();
  for (int i = 0; i < 2; ++i) EXPECT_NE(first[i].status, 0) << "killed during outer step 3's round: " << first[i].output;
  for (const char* name : {"a", "b"})
    ASSERT_TRUE(std::filesystem::exists(root + "/" + name + "/checkpoints/step_00000014/outer_in_flight.safetensors"))
        << name << " has no checkpoint of step 14 with its round in flight";
  std::vector<std::string> resume = sets;
  resume.push_back("ckpt.resume=auto");
  for (int i = 0; i < 2; ++i) {
    const std::string name = i == 0 ? "a" : "b";
    nodes.emplace_back([&, i, name] {
      second[i] = test::run_command(train_command(root, name, coordinator.port(), "", 40, resume));
    });
  }
  for (auto& t : nodes) t.join();
  stop = true;
  ct.join();
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(second[i].status, 0) << second[i].output;
    EXPECT_NE(second[i].output.find("resuming from"), std::string::npos) << second[i].output;
    EXPECT_NE(second[i].output.find("the checkpoint had outer step 2's round in flight: launched again"),
              std::string::npos)
        << second[i].output;
  }
  EXPECT_EQ(coordinator.disagreed_steps(), 0);
  std::vector<std::map<int64_t, std::pair<int64_t, std::string>>> applied(2);  // outer step -> (rewinds, hash)
  for (int i = 0; i < 2; ++i) {
    const std::string name = i == 0 ? "a" : "b";
    std::vector<int64_t> order;
    for (const auto& l : read_metrics(root + "/" + name + "/metrics.jsonl"))
      for (const char* key : {"outer", "outer_final"})
        if (l.contains(key)) {
          const int64_t k = l[key]["outer_step"].get<int64_t>();
          order.push_back(k);
          applied[i][k] = {l[key]["rewinds"].get<int64_t>(), l[key]["hash"].get<std::string>()};
          if (k == 2) {
            EXPECT_EQ(l["step"], 15) << name << ": the relaunched round is applied at the first boundary";
          }
        }
    EXPECT_EQ(order, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8})) << name;
  }
  for (int64_t k = 1; k <= 8; ++k) EXPECT_EQ(applied[0][k], applied[1][k]) << "outer step " << k;
  EXPECT_GE(applied[0][2].first, 1) << "the run went back to outer step 1 and did step 2 again";
  std::ifstream fa(root + "/a/model.safetensors", std::ios::binary), fb(root + "/b/model.safetensors", std::ios::binary);
  const std::string wa((std::istreambuf_iterator<char>(fa)), std::istreambuf_iterator<char>()),
      wb((std::istreambuf_iterator<char>(fb)), std::istreambuf_iterator<char>());
  EXPECT_FALSE(wa.empty());
  EXPECT_EQ(wa, wb) << "both end on the run's outer parameters";
}

// A SIGTERM while the coordinator is gone, with blocking rounds
// (diloco.overlap none) and a round timeout of two minutes: each node is
// in its round, waiting for the coordinator to come back, and must stop
// within seconds, not at mesh.round_timeout_ms, as a stop does: exit 0,
// the final checkpoint written, the round it gave up kept in it as in
// flight (done on resume). docs/RELIABILITY.md: "A SIGTERM while the
// coordinator is gone".
TEST_F(Elastic, SigtermWhileTheCoordinatorIsGoneStopsWithinSeconds) {
  TestRun run("elastic_stop_in_outage");
  const std::string& root = run.root;
  run.options.membership.ready_timeout = milliseconds(20000);
  run.options.membership.min_ring = 2;
  auto coordinator = std::make_unique<Coordinator>(run.options);
  std::atomic<bool> stop{false};
  std::thread ct([&] { coordinator->run(stop); });
  const uint16_t port = coordinator->port();
  const std::vector<std::string> names = {"a", "b"};
  std::vector<test::CommandResult> results(2);
  std::vector<std::atomic<bool>> exited(2);
  std::vector<std::thread> nodes;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string cmd = "echo $$ > " + root + "/" + names[i] + ".pid; exec " +
                            train_command(root, names[i], port, "", 100000,
                                          {"diloco.overlap=none", "mesh.round_timeout_ms=120000",
                                           "ckpt.save_final=true"}) +
                            " > " + root + "/" + names[i] + ".log 2>&1";
    nodes.emplace_back([&, i, cmd] {
      results[i] = test::run_command(cmd);
      exited[i] = true;
    });
  }
  auto log_of = [&](const std::string& name) {
    std::ifstream f(root + "/" + name + ".log");
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  auto pid_of = [&](const std::string& name) {
    std::ifstream f(root + "/" + name + ".pid");
    pid_t pid = 0;
    f >> pid;
    return pid;
  };
  // Ends every node still running (a failed assertion must not leave them).
  auto kill_all = [&] {
    for (size_t i = 0; i < names.size(); ++i)
      if (!exited[i] && pid_of(names[i]) > 0) ::kill(pid_of(names[i]), SIGKILL);
    for (auto& t : nodes)
      if (t.joinable()) t.join();
  };
  for (int t = 0; t < 600 && coordinator->agreed_steps() < 2; ++t) std::this_thread::sleep_for(milliseconds(100));
  if (coordinator->agreed_steps() < 2) {
    kill_all();
    stop = true;
    ct.join();
    FAIL() << "the two nodes did not get going:\n" << log_of("a") << "\n" << log_of("b");
  }
  // The coordinator goes away without a word, as a killed one does: its
  // connections close and its port refuses.
  stop = true;
  ct.join();
  coordinator.reset();
  bool both_lost = false;
  for (int t = 0; t < 200 && !both_lost; ++t) {
    std::this_thread::sleep_for(milliseconds(100));
    both_lost = log_of("a").find("lost the coordinator; reconnecting") != std::string::npos &&
                log_of("b").find("lost the coordinator; reconnecting") != std::string::npos;
  }
  if (!both_lost) {
    kill_all();
    FAIL() << "the nodes did not notice the coordinator was gone:\n" << log_of("a") << "\n" << log_of("b");
  }
  // Each node reaches its next boundary within a fraction of a second (five
  // small steps) and waits there in its round.
  std::this_thread::sleep_for(milliseconds(3000));
  for (const std::string& name : names) ::kill(pid_of(name), SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  while ((!exited[0] || !exited[1]) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30))
    std::this_thread::sleep_for(milliseconds(50));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const bool all_exited = exited[0] && exited[1];
  kill_all();
  ASSERT_TRUE(all_exited) << "a node did not stop within 30 s of SIGTERM (mesh.round_timeout_ms is 120 s):\n"
                          << log_of("a") << "\n" << log_of("b");
  EXPECT_LT(took, 10.0) << "the nodes took " << took << " s to stop after SIGTERM";
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string log = log_of(names[i]);
    EXPECT_EQ(results[i].status, 0) << log;
    EXPECT_NE(log.find("round given up on a stop request"), std::string::npos)
        << "node " << names[i] << " was not stopped in its round:\n" << log;
    EXPECT_NE(log.find("on request"), std::string::npos) << log;
    // The final checkpoint is of the boundary the node stopped at, and
    // holds the round it gave up.
    const std::vector<std::string> saved = list_checkpoints(root + "/" + names[i] + "/checkpoints");
    ASSERT_FALSE(saved.empty()) << log;
    const std::string newest = *std::max_element(saved.begin(), saved.end());
    const CheckpointState st = read_checkpoint(newest, true);
    EXPECT_EQ(st.step % 5, 0) << newest;
    EXPECT_EQ(st.outer_in_flight_step, st.step / 5) << newest;
    EXPECT_EQ(st.outer_in_flight.size(), st.params.size());
    double norm = 0.0;
    for (size_t j = 0; j < st.outer_in_flight.size(); ++j) {
      // The pseudo-gradient it keeps is the outer parameters minus the weights.
      if (j % 997 == 0) {
        EXPECT_FLOAT_EQ(st.outer_in_flight[j], st.outer[j] - st.params[j]) << j;
      }
      norm += static_cast<double>(st.outer_in_flight[j]) * st.outer_in_flight[j];
    }
    EXPECT_GT(norm, 0.0);
  }

  // The coordinator back (a fresh one: no state file), and both nodes
  // resumed from those checkpoints: the round they gave up is done first,
  // and the run goes on in agreement to the end, on the same weights.
  int64_t stopped_at = 0;
  for (const std::string& name : names) {
    const std::vector<std::string> saved = list_checkpoints(root + "/" + name + "/checkpoints");
    stopped_at = std::max<int64_t>(stopped_at, read_checkpoint(*std::max_element(saved.begin(), saved.end()), true).step);
  }
  Coordinator back(run.options);
  std::atomic<bool> stop_back{false};
  std::thread cb([&] { back.run(stop_back); });
  std::vector<std::thread> resumed;
  std::vector<test::CommandResult> again(2);
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string cmd = train_command(root, names[i], back.port(), "", static_cast<int>(stopped_at + 10),
                                          {"diloco.overlap=none", "ckpt.resume=auto", "ckpt.save_final=true"}) +
                            " > " + root + "/" + names[i] + "-resumed.log 2>&1";
    resumed.emplace_back([&, i, cmd] { again[i] = test::run_command(cmd); });
    // The second node joins only once the first is waiting in its round:
    // the fresh coordinator has the run at the first one's step by then, and
    // the second, holding the same step, must be counted in step with it
    // (not sent to fetch the state from a node that waits for it: CI, under
    // load, 2026-12-04).
    for (int t = 0; i == 0 && t < 300; ++t) {
      if (log_of("a-resumed").find("round in flight: done now") != std::string::npos) {
        std::this_thread::sleep_for(milliseconds(1000));
        break;
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
  }
  for (auto& t : resumed) t.join();
  stop_back = true;
  cb.join();
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_EQ(again[i].status, 0) << log_of(names[i] + "-resumed");
  EXPECT_GE(back.agreed_steps(), 2) << log_of("a-resumed") << "\n" << log_of("b-resumed");
  EXPECT_EQ(back.disagreed_steps(), 0);
  auto bytes_of = [&](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  const std::string wa = bytes_of(root + "/a/model.safetensors"), wb = bytes_of(root + "/b/model.safetensors");
  EXPECT_FALSE(wa.empty());
  EXPECT_TRUE(wa == wb) << "the resumed nodes ended on different weights";
}

// The same with a network namespace per node and partitions between two live
// nodes (silent packet loss both ways), where the machine allows it (root and
// `ip netns`; CI machines without them skip with a message).
TEST_F(Elastic, ChaosWithPartitionsKeepsEveryNodeInAgreement) {
  if (::geteuid() != 0 || test::run_command("ip netns list").status != 0)
    GTEST_SKIP() << "needs root and `ip netns` (network namespaces) to partition nodes";
  const std::string out = ::testing::TempDir() + "/chaos_netns";
  const auto r =
      test::run_command(test::binary_dir() + "/intellect_chaos --seconds 40 --seed 5 --netns --out " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream f(out + "/chaos_summary.json");
  const nlohmann::json s = nlohmann::json::parse(f);
  EXPECT_GE(s["faults"]["partition"].get<int>(), 1);
  EXPECT_EQ(s["diverged"], 0);
  EXPECT_GE(s["outer_steps"].get<int>(), 5);
  EXPECT_LT(s["loss_last"].get<double>(), s["loss_first"].get<double>());
}

}  // namespace
}  // namespace intellect
