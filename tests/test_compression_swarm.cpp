// Issue 18 end to end, with real intellect_train processes on loopback: a
// swarm with int4 or sparse compression agrees bit for bit at every outer
// step and ends on the same weights; with sparse, a node that joins mid-run
// takes the state and the rounds since from a donor (the ring's sparse
// bytes, all nodes' contributions) and agrees from then on.
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "dist/coordinator.h"
#include "test_util.h"
#include "util/file.h"

namespace intellect {
namespace {

using std::chrono::milliseconds;
namespace fs = std::filesystem;

std::string corpus_dir() { return ::testing::TempDir() + "/compression_swarm_corpus"; }

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

const std::vector<std::string> kTinyModel = {"model.dim=48", "model.ffn_dim=128", "model.head_dim=12",
                                             "model.n_layers=2", "train.threads=1", "train.eval_every=0",
                                             "train.log_every=1000"};

class CompressionSwarm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(corpus_dir() + "/manifest.json")) {
      const auto r = test::run_command(test::binary_dir() + "/make_corpus --out " + corpus_dir() +
                                       " --docs 600 --val-docs 60");
      ASSERT_EQ(r.status, 0) << r.output;
    }
  }
};

TEST_F(CompressionSwarm, ThreeNodesAgreeAtEveryStepWithInt4AndSparse) {
  // blocks2 twice: through the ring, and through the direct pattern (each
  // contribution's committed chunks to its segment's owner).
  const std::vector<std::pair<const char*, const char*>> cells = {
      {"int4", "ring"}, {"sparse", "ring"}, {"blocks4", "ring"}, {"blocks2", "ring"}, {"blocks2", "direct"}};
  for (const auto& [compression, all_reduce] : cells) {
    SCOPED_TRACE(std::string(compression) + " " + all_reduce);
    const std::string out = ::testing::TempDir() + "/compression_swarm_" + compression + "_" + all_reduce;
    fs::remove_all(out);
    std::string cmd = test::binary_dir() + "/intellect_train --local-nodes 3";
    std::vector<std::string> sets = kTinyModel;
    for (const std::string& s :
         {"train.out_dir=" + out, "data.train=" + corpus_dir() + "/train_*.bin", "data.val=" + corpus_dir() + "/val_*.bin",
          std::string("train.steps=24"), std::string("diloco.inner_steps=6"), std::string("diloco.compression=") + compression,
          std::string("diloco.all_reduce=") + all_reduce})
      sets.push_back(s);
    for (const std::string& s : sets) cmd += " --set " + s;
    const test::CommandResult r = test::run_command(cmd);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("outer steps where all nodes agreed: 4, diverged: 0"), std::string::npos) << r.output;
    std::vector<std::vector<nlohmann::json>> m;
    for (int i = 0; i < 3; ++i) m.push_back(read_metrics(out + "/node-" + std::to_string(i) + "/metrics.jsonl"));
    uint64_t sent = 0;
    int outer = 0;
    for (const auto& l : m[0])
      if (l.contains("outer")) {
        EXPECT_EQ(l["outer"]["compression"], compression);
        EXPECT_EQ(l["outer"]["ring_size"], 3);
        sent += l["outer"]["bytes_sent"].get<uint64_t>();
        ++outer;
        if (std::string(compression) == "sparse") {
          EXPECT_GT(l["outer"]["error_feedback_rms"].get<double>(), 0.0);
        }
      }
    ASSERT_EQ(outer, 4);
    // Bytes sent per value per outer step (the weights file is ~4 bytes a value).
    const double values = 0.0 + read_all(out + "/node-0/model.safetensors").size() / 4.0;
    const double per_value = sent / 4.0 / values;
    if (std::string(compression) == "int4") {
      EXPECT_NEAR(per_value, 2.0 * 2 / 3 * 0.5625, 0.1);  // 2(N − 1)/N · 4.5 bits
    } else if (std::string(compression) == "blocks4" || std::string(compression) == "blocks2") {
      // The same ring over 1/P of the values in outer steps 1-3, and over
      // every value in the run's last (4): (3 / P + 1) / 4 of the codec's
      // ring. blocks4: P = 5 at int4 (4.5 bits); blocks2: P = 3 at int2 (2.5 bits).
      const bool two = std::string(compression) == "blocks2";
      const double period = two ? 3 : 5, bytes = two ? 0.3125 : 0.5625;
      EXPECT_NEAR(per_value, 2.0 * 2 / 3 * bytes * (3.0 / period + 1) / 4, 0.03);
      for (const auto& l : m[0])
        if (l.contains("outer")) {
          EXPECT_GT(l["outer"]["error_feedback_rms"].get<double>(), 0.0);
          const bool last = l["outer"]["outer_step"].get<int64_t>() == 4;
          // 1/P of the ~19 blocks, rounded to whole blocks of 4096; all of them at the end.
          EXPECT_NEAR(l["outer"]["values_sent"].get<double>(), last ? values : values / period, 4096 + values / 50);
        }
    } else {
      EXPECT_LT(per_value, 2 * (2 * 0.01 + 0.01)) << "(N − 1) contributions of ~2 bytes per kept value";
    }
    const std::string w0 = read_all(out + "/node-0/model.safetensors");
    ASSERT_FALSE(w0.empty());
    for (int i = 1; i < 3; ++i) EXPECT_EQ(read_all(out + "/node-" + std::to_string(i) + "/model.safetensors"), w0);
    // int4 learns like int8 here (val 3.30 both); sparse at 1% moves 1% of
    // the coordinates per outer step, and 4 outer steps are few (val 5.15
    // from 5.56; 4.73 at 3%, 4.03 at 10%): it needs many more rounds.
    const double first = m[0].front()["loss"].get<double>(), val = m[0].back()["val_loss"].get<double>();
    EXPECT_LT(val, std::string(compression) == "int4" ? first - 2.0 : first - 0.2) << "it learned";
    std::printf("%s (%s): first loss %.3f, final validation loss %.3f, %.3f bytes a value per outer step\n",
                compression, all_reduce, first, val, per_value);
  }
}

// A joiner with sparse compression: the donor serves its snapshot and the
// rounds since as the all-gather carried them (every node's contribution);
// the joiner applies the same outer steps (same hashes) and then takes part
// in the rings with an empty error-feedback buffer.
void joiner_catches_up_and_agrees(const std::string& compression, const std::string& all_reduce = "ring") {
  const std::string root = ::testing::TempDir() + "/compression_swarm_join_" + compression + "_" + all_reduce;
  fs::remove_all(root);
  make_dirs(root);
  const std::vector<uint8_t> key(32, 0x42);
  write_file_atomic(root + "/secret", key.data(), key.size());
  ::chmod((root + "/secret").c_str(), 0600);
  CoordinatorOptions co;
  co.credentials = RunSecret(key, "test secret");
  co.heartbeat_interval = milliseconds(300);
  co.membership.heartbeat_timeout = milliseconds(3000);
  co.membership.ready_timeout = milliseconds(20000);
  co.membership.min_ring = 2;
  co.direct = all_reduce == "direct";
  Coordinator coordinator(co);
  std::atomic<bool> stop{false};
  std::thread ct([&] { coordinator.run(stop); });
  auto command = [&](const std::string& name) {
    std::string cmd = test::binary_dir() + "/intellect_train";
    std::vector<std::string> sets = kTinyModel;
    for (const std::string& s :
         {"train.out_dir=" + root + "/" + name, "mesh.name=" + name, "mesh.secret_file=" + root + "/secret",
          "mesh.coordinator=127.0.0.1:" + std::to_string(coordinator.port()), std::string("mesh.heartbeat_ms=300"),
          std::string("mesh.round_timeout_ms=20000"), std::string("diloco.enabled=true"),
          std::string("diloco.inner_steps=5"), "diloco.compression=" + compression, "diloco.all_reduce=" + all_reduce,
          std::string("train.steps=60"), "data.train=" + corpus_dir() + "/train_*.bin", std::string("data.val="),
          std::string("data.partitions=3"), std::string("ckpt.save_final=false")})
      sets.push_back(s);
    for (const std::string& s : sets) cmd += " --set " + s;
    return cmd;
  };
  std::vector<test::CommandResult> results(3);
  std::vector<std::thread> nodes;
  for (int i = 0; i < 2; ++i)
    nodes.emplace_back([&, i] { results[i] = test::run_command(command("node-" + std::to_string(i))); });
  for (int t = 0; t < 600 && coordinator.agreed_steps() < 2; ++t) std::this_thread::sleep_for(milliseconds(100));
  ASSERT_GE(coordinator.agreed_steps(), 2) << "the first two nodes did not get going";
  nodes.emplace_back([&] { results[2] = test::run_command(command("joiner")); });
  for (auto& t : nodes) t.join();
  stop = true;
  ct.join();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(results[i].status, 0) << results[i].output;
  EXPECT_EQ(coordinator.disagreed_steps(), 0);
  const auto a = read_metrics(root + "/node-0/metrics.jsonl");
  const auto j = read_metrics(root + "/joiner/metrics.jsonl");
  ASSERT_FALSE(j.empty());
  ASSERT_TRUE(j.front().contains("joined")) << j.front().dump();
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
  EXPECT_NE(results[2].output.find("plus the error-feedback buffer"), std::string::npos) << results[2].output;
}

TEST_F(CompressionSwarm, ASparseJoinerCatchesUpFromTheRingsBytesAndAgrees) { joiner_catches_up_and_agrees("sparse"); }

// blocks4: the donor's rounds are the compact int4 vectors its ring
// carried; the joiner scatters each with that round's selection and applies
// the same outer steps.
TEST_F(CompressionSwarm, ABlocks4JoinerCatchesUpFromTheRingsBytesAndAgrees) { joiner_catches_up_and_agrees("blocks4"); }
// blocks2: the same with the int2 ring's compact vectors.
TEST_F(CompressionSwarm, ABlocks2JoinerCatchesUpFromTheRingsBytesAndAgrees) { joiner_catches_up_and_agrees("blocks2"); }
// blocks2 through the direct pattern (the setting within 1% of fp32 on the
// 150m): the donor keeps each round's average as the owners encoded it, and
// the joiner applies the same outer steps from those bytes.
TEST_F(CompressionSwarm, ABlocks2JoinerOfTheDirectPatternCatchesUpAndAgrees) {
  joiner_catches_up_and_agrees("blocks2", "direct");
}

}  // namespace
}  // namespace intellect
