// The mesh end to end on loopback: a coordinator and several nodes in one
// process, each node averaging its own vector over the ring the coordinator
// forms; nodes agree bit for bit, a wrong secret is refused, and a node that
// dies during the rounds makes the others retry without it instead of hanging.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "dist/coordinator.h"
#include "dist/mesh_node.h"
#include "dist/round_codec.h"
#include "dist/sparse.h"
#include "dist/codec.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

using std::chrono::milliseconds;

RunSecret secret(uint8_t fill) { return RunSecret(std::vector<uint8_t>(32, fill), "test secret"); }

struct Swarm {
  std::atomic<bool> stop{false};
  std::unique_ptr<Coordinator> coordinator;
  std::thread thread;
  explicit Swarm(milliseconds ready_timeout = milliseconds(5000), size_t min_ring = 3,
                 std::function<void()> on_turn = {}, PeerCredentials credentials = secret(7),
                 std::function<void(const std::string&)> log = {}, bool order_by_rate = true,
                 bool unsealed_frames_for_benchmarks = false, bool direct = false) {
    CoordinatorOptions o;
    o.direct = direct;
    o.unsealed_frames_for_benchmarks = unsealed_frames_for_benchmarks;
    o.order_by_rate = order_by_rate;
    o.on_turn = std::move(on_turn);
    o.credentials = std::move(credentials);
    o.heartbeat_interval = milliseconds(200);
    o.membership.heartbeat_timeout = milliseconds(1500);
    o.membership.ready_timeout = ready_timeout;
    o.membership.min_ring = min_ring;
    o.log = [log](const std::string& m) {
      if (log) log(m);
      if (std::getenv("MESH_LOG")) std::fprintf(stderr, "[coord] %s\n", m.c_str());
    };
    coordinator = std::make_unique<Coordinator>(o);
    thread = std::thread([this] { coordinator->run(stop); });
  }
  ~Swarm() { kill(); }
  // The coordinator goes away without a word, as a killed one does: its
  // connections close and its port refuses.
  void kill() {
    stop = true;
    if (thread.joinable()) thread.join();
    coordinator.reset();
  }
  MeshNodeOptions node(const std::string& name, uint8_t key = 7) const {
    MeshNodeOptions o;
    o.coordinator = "127.0.0.1:" + std::to_string(coordinator->port());
    o.name = name;
    o.credentials = secret(key);
    o.round_timeout = milliseconds(10000);
    o.message_timeout = milliseconds(3000);
    o.log = [](const std::string&) {};
    return o;
  }
};

// Three nodes average two steps' vectors over `rings` parallel rings; every
// node must end with the same bytes, close to the exact average.
void three_nodes_average(int rings, Compression compression, double tolerance, bool direct = false) {
  Swarm swarm;
  const size_t n = 100003;
  std::vector<std::vector<float>> out(3, std::vector<float>(n));
  std::vector<std::thread> threads;
  std::vector<std::string> errors(3);
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      try {
        MeshNodeOptions o = swarm.node("n" + std::to_string(i));
        o.rings = rings;
        o.compression = compression;
        o.direct = direct;
        MeshNode node(o);
        for (int64_t step = 1; step <= 2; ++step) {
          std::vector<float> in = test::randn(n, 100 * i + step, 1e-3f);
          // Node 1 averages in place (its input buffer becomes the average,
          // as a blocking DiLoCo node does): the same bits as the others.
          const OuterRoundStats s =
              i == 1 ? averaged_or_fail(node.average(step, "{}", (out[i] = in), out[i], nullptr,
                                                     [&] { out[i] = test::randn(n, 100 * i + step, 1e-3f); }))
                     : averaged_or_fail(node.average(step, "{}", in, out[i]));
          EXPECT_EQ(s.ring_size, 3u);
          EXPECT_EQ(s.rings, rings);
          EXPECT_GT(s.bytes_sent, 0u);
          node.report_hash(step, 42);
        }
        // What a late node or a joiner would fetch of round 2: the rings'
        // own bytes, decoding to this node's average bit for bit.
        node.publish_round(2, out[i]);
        StateDownload d;
        d.kind = StateKind::round;
        d.outer_step = 2;
        fetch_state(d, node.state_address(), o.credentials, milliseconds(5000));
        std::vector<float> got(n, -1.0f);
        decode_round(d.bytes, got, "round 2");
        EXPECT_EQ(0, std::memcmp(got.data(), out[i].data(), n * sizeof(float)));
        const double fraction = double(d.bytes.size()) / (n * sizeof(float));
        if (compression != Compression::None) {
          EXPECT_LT(fraction, 0.3) << "an int8 round must be about a quarter of fp32 (plus a 1 KiB table a block)";
        } else {
          EXPECT_GT(fraction, 1.0);
        }
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(out[0], out[2]);
  // Close to the exact average (step 2's inputs).
  double err = 0, ref = 0;
  std::vector<std::vector<float>> in;
  for (int i = 0; i < 3; ++i) in.push_back(test::randn(n, 100 * i + 2, 1e-3f));
  for (size_t k = 0; k < n; ++k) {
    const double avg = (double(in[0][k]) + in[1][k] + in[2][k]) / 3;
    err += (out[0][k] - avg) * (out[0][k] - avg);
    ref += avg * avg;
  }
  EXPECT_LT(std::sqrt(err / ref), tolerance);
  for (int tries = 0; tries < 50 && swarm.coordinator->agreed_steps() < 2; ++tries)
    std::this_thread::sleep_for(milliseconds(20));
  EXPECT_EQ(swarm.coordinator->agreed_steps(), 2);
}

TEST(Mesh, ThreeNodesAverageToIdenticalResults) { three_nodes_average(1, Compression::Int8, 0.05); }

// Parallel rings (one per segment, INTELLECT-1's ring per GPU): the same
// agreement, with int8 and exactly with fp32.
TEST(Mesh, ParallelRingsAverageToIdenticalResults) {
  three_nodes_average(4, Compression::Int8, 0.05);
  three_nodes_average(3, Compression::None, 1e-6);
}

// The direct pattern (direct_allreduce.h) over the nodes' real connections:
// every member dials every other on each lane, commits, sends its committed
// chunks to their owners; the same agreement, the round kept for joiners
// decoding to the average bit for bit, as the ring's.
TEST(Mesh, TheDirectPatternAveragesToIdenticalResults) {
  three_nodes_average(1, Compression::Int8, 0.05, true);
  three_nodes_average(2, Compression::Int4, 0.25, true);
  three_nodes_average(3, Compression::None, 1e-6, true);
}

// A swarm whose nodes disagree on diloco.all_reduce fails its rounds, and
// says why: whichever way the mismatch shows (a header of the other
// pattern's phase, a peer that dials without being a ring neighbour, a
// member that never dials), the message names the key.
TEST(Mesh, NodesOnDifferentPatternsFailNamingTheConfigKey) {
  Swarm swarm(milliseconds(3000));
  const size_t n = 30011;
  std::mutex mu;
  std::vector<std::string> said;
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      MeshNodeOptions o = swarm.node("n" + std::to_string(i));
      o.direct = i != 0;
      o.max_retries = 0;
      o.round_timeout = milliseconds(4000);
      o.message_timeout = milliseconds(1500);
      o.log = [&](const std::string& m) {
        std::lock_guard<std::mutex> lock(mu);
        said.push_back(m);
      };
      try {
        MeshNode node(o);
        std::vector<float> in = test::randn(n, 7 + i, 1e-3f), out(n);
        (void)node.average(1, "{}", in, out);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        said.push_back(e.what());
      }
    });
  for (auto& t : threads) t.join();
  bool named = false;
  for (const auto& m : said) named |= m.find("diloco.all_reduce") != std::string::npos;
  EXPECT_TRUE(named) << "nothing said names diloco.all_reduce";
}

// With node keys every contribution is signed and audited against its
// sender's commitment, at every owner.
TEST(Mesh, NodeKeysTheDirectPatternAverages) {
  std::vector<NodeKey> keys;
  std::vector<PublicKey> admitted;
  for (int i = 0; i < 4; ++i) {
    keys.push_back(NodeKey::generate());
    admitted.push_back(keys.back().public_key());
  }
  const PeerAdmission admit = [admitted](const PublicKey& pk) {
    return std::find(admitted.begin(), admitted.end(), pk) != admitted.end() ? std::string() : std::string("not ours");
  };
  Swarm swarm(milliseconds(2000), 3, {}, PeerCredentials::keyed(keys[0], admit));
  const size_t n = 300000;  // more chunks (of 2^18) than members: audited
  std::vector<std::vector<float>> out(3, std::vector<float>(n));
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      try {
        MeshNodeOptions o = swarm.node("n" + std::to_string(i));
        o.credentials = PeerCredentials::keyed(keys[i + 1], admit);
        o.direct = true;
        o.chunk_elems = 50000;
        MeshNode node(o);
        std::vector<float> in = test::randn(n, 31 * i + 1, 1e-3f);
        averaged_or_fail(node.average(1, "{}", in, out[i]));
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(errors[i], "") << "n" << i;
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(out[0], out[2]);
}

// One thread at a time makes a node's round calls (with overlap, the round
// thread while a round is in flight): a second one meanwhile is refused, not
// queued. cancel() ends a round waiting for its ring within a fraction of a
// second, with StoppedOnRequest, and refuses later rounds.
TEST(Mesh, RoundCallsAreOneThreadAtATimeAndCancelEndsAWaitingRound) {
  Swarm swarm(milliseconds(10000), 2);  // a ring waits up to 10 s for a second node
  MeshNode node(swarm.node("alone"));
  std::vector<float> in(1000, 1.0f), out(1000);
  std::string error;
  std::atomic<bool> waiting{false};
  std::thread round([&] {
    try {
      waiting = true;
      node.average(1, "{}", in, out);
      error = "<returned>";
    } catch (const StoppedOnRequest& e) {
      error = e.what();
    } catch (const std::exception& e) {
      error = std::string("other: ") + e.what();
    }
  });
  while (!waiting.load()) std::this_thread::sleep_for(milliseconds(5));
  std::this_thread::sleep_for(milliseconds(300));
  const std::string second = test::error_of([&] { node.poll_coordinator(); });
  EXPECT_NE(second.find("another thread is in a round call"), std::string::npos) << second;
  const auto t0 = std::chrono::steady_clock::now();
  node.cancel();
  round.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(1500));
  EXPECT_NE(error.find("the node stops"), std::string::npos) << error;
  EXPECT_THROW(node.average(2, "{}", in, out), StoppedOnRequest);
}

// bench_allreduce --plaintext measures sealing against the same ring with
// frames unsealed: that ring must compute the same bits as the sealed one
// (dense int8 over two lanes, and the sparse all-gather). A node set
// otherwise than its coordinator cannot even join.
std::vector<float> ring_bits(bool unsealed, Compression compression) {
  // Rings in ascending node ids, joined one after another: the same ranks
  // (so the same order of summation) in both runs.
  Swarm swarm(milliseconds(5000), 3, {}, secret(7), {}, /*order_by_rate=*/false, unsealed);
  const size_t n = 50021;
  std::vector<std::vector<float>> out(3, std::vector<float>(n));
  std::vector<std::string> errors(3);
  std::vector<std::unique_ptr<MeshNode>> nodes;
  for (int i = 0; i < 3; ++i) {
    MeshNodeOptions o = swarm.node("n" + std::to_string(i));
    o.unsealed_frames_for_benchmarks = unsealed;
    o.compression = compression;
    o.rings = 2;
    if (compression == Compression::Sparse)
      o.sparse_k = sparse_k_for_density(0.05, default_codec_block(Compression::Sparse));
    nodes.push_back(std::make_unique<MeshNode>(o));
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      try {
        MeshNode& node = *nodes[i];
        const std::vector<float> in = test::randn(n, 300 + i, 1e-3f);
        SparseRound sr;
        averaged_or_fail(node.average(1, "{}", in, out[i], compression == Compression::Sparse ? &sr : nullptr));
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(out[0], out[2]);
  return out[0];
}

TEST(Mesh, UnsealedFramesForBenchmarksGiveTheSameBitsAsSealed) {
  for (Compression c : {Compression::Int8, Compression::Sparse}) {
    SCOPED_TRACE(compression_name(c));
    const std::vector<float> sealed = ring_bits(false, c), unsealed = ring_bits(true, c);
    ASSERT_EQ(sealed.size(), unsealed.size());
    EXPECT_EQ(0, std::memcmp(sealed.data(), unsealed.data(), sealed.size() * sizeof(float)));
    double sq = 0;
    for (float v : sealed) sq += double(v) * v;
    EXPECT_GT(sq, 0.0) << "an all-zero average would make the comparison empty";
  }
}

TEST(Mesh, AnUnsealedNodeCannotJoinASealedRunNorASealedOneAnUnsealedRun) {
  for (const bool coordinator_unsealed : {false, true}) {
    Swarm swarm(milliseconds(5000), 3, {}, secret(7), {}, true, coordinator_unsealed);
    MeshNodeOptions o = swarm.node("other-mode");
    o.unsealed_frames_for_benchmarks = !coordinator_unsealed;
    o.join_timeout = milliseconds(2000);
    const std::string error = test::error_of([&] { MeshNode node(o); });
    EXPECT_NE(error.find("unsealed_frames_for_benchmarks"), std::string::npos) << error;
  }
}

// A node whose run-wide settings (model.*, diloco.*) differ from the run's
// is refused at its join, the keys named; the run's are the first node's
// that gave any. The same settings in another text join, and so does a node
// that gives none (tools, tests).
TEST(Mesh, AJoinerWithOtherSettingsIsRefusedWithTheKeysNamed) {
  Swarm swarm;
  MeshNodeOptions a = swarm.node("a");
  a.run_settings = R"({"diloco":{"compression":"blocks2","outer_lr":1.25},"model":{"dim":48}})";
  MeshNode first(a);
  MeshNodeOptions b = swarm.node("b");
  b.run_settings = R"({"diloco":{"compression":"blocks2","outer_lr":1},"model":{"dim":48}})";
  b.join_timeout = milliseconds(3000);
  const std::string error = test::error_of([&] { MeshNode refused(b); });
  EXPECT_NE(error.find("diloco.outer_lr is 1 here and 1.25 in the run"), std::string::npos) << error;
  EXPECT_NE(error.find("restart the node"), std::string::npos) << error;
  MeshNodeOptions c = swarm.node("c");
  c.run_settings = R"({"model": {"dim": 48}, "diloco": {"outer_lr": 1.25, "compression": "blocks2"}})";
  MeshNode same(c);
  MeshNode unsaid(swarm.node("d"));
}

// The run's settings survive a coordinator restart (its state file): a
// joiner with others is refused by the restarted coordinator too.
TEST(Mesh, TheRunsSettingsSurviveACoordinatorRestart) {
  const std::string state = ::testing::TempDir() + "/mesh_settings_coordinator.json";
  std::filesystem::remove(state);
  CoordinatorOptions co;
  co.credentials = secret(7);
  co.heartbeat_interval = milliseconds(200);
  co.membership.heartbeat_timeout = milliseconds(5000);
  co.state_file = state;
  co.log = [](const std::string& m) { if (std::getenv("MESH_LOG")) std::fprintf(stderr, "[coord] %s\n", m.c_str()); };
  auto options = [&](const std::string& name, uint16_t port, const std::string& settings) {
    MeshNodeOptions o;
    o.coordinator = "127.0.0.1:" + std::to_string(port);
    o.name = name;
    o.credentials = secret(7);
    o.join_timeout = milliseconds(3000);
    o.message_timeout = milliseconds(3000);
    o.run_settings = settings;
    o.log = [](const std::string&) {};
    return o;
  };
  const std::string run = R"({"diloco":{"rings":1}})";
  {
    Coordinator coordinator(co);
    std::atomic<bool> stop{false};
    std::thread ct([&] { coordinator.run(stop); });
    { MeshNode first(options("first", coordinator.port(), run)); }
    stop = true;
    ct.join();
  }
  ASSERT_TRUE(std::filesystem::exists(state));
  Coordinator restarted(co);
  std::atomic<bool> stop{false};
  std::thread ct([&] { restarted.run(stop); });
  const std::string error =
      test::error_of([&] { MeshNode refused(options("second", restarted.port(), R"({"diloco":{"rings":8}})")); });
  EXPECT_NE(error.find("diloco.rings is 8 here and 1 in the run"), std::string::npos) << error;
  { MeshNode same(options("third", restarted.port(), run)); }
  stop = true;
  ct.join();
}

TEST(Mesh, WrongSecretIsRefused) {
  Swarm swarm;
  MeshNodeOptions o = swarm.node("intruder", 9);
  o.join_timeout = milliseconds(2000);
  EXPECT_THROW(MeshNode bad(o), Error);
}

// Node keys end to end: each node and the coordinator hold a key of their
// own and one allowlist file. Removing a node's line from the file evicts it
// within one heartbeat timeout, and it cannot come back; the others go on.
TEST(Mesh, NodeKeysAverageAndARemovedKeyIsEvictedAndRefused) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("intellect_mesh_keys_" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  std::vector<NodeKey> keys;
  std::string allowlist;
  for (int i = 0; i < 4; ++i) {  // coordinator, n0, n1, n2
    keys.push_back(NodeKey::generate());
    allowlist += public_key_hex(keys.back().public_key()) + (i == 0 ? " coordinator\n" : " n" + std::to_string(i - 1) + "\n");
  }
  const std::string list_path = dir + "/allowlist";
  write_file_atomic(list_path, allowlist.data(), allowlist.size());
  std::mutex mu;
  std::vector<std::string> lines;
  auto contains = [&](const std::string& what) {
    std::lock_guard lk(mu);
    for (const auto& l : lines)
      if (l.find(what) != std::string::npos) return true;
    return false;
  };
  Swarm swarm(milliseconds(2000), 3, {}, PeerCredentials::keyed(keys[0], allowlist_admission(list_path)),
              [&](const std::string& m) {
                std::lock_guard lk(mu);
                lines.push_back(m);
              });
  const size_t n = 20000;
  std::vector<std::unique_ptr<MeshNode>> nodes;
  for (int i = 0; i < 3; ++i) {
    MeshNodeOptions o = swarm.node("n" + std::to_string(i));
    o.credentials = PeerCredentials::keyed(keys[i + 1], allowlist_admission(list_path));
    nodes.push_back(std::make_unique<MeshNode>(o));
  }
  auto round = [&](int64_t step, std::vector<int> who) {
    std::vector<std::vector<float>> out(3, std::vector<float>(n));
    std::vector<std::string> errors(3);
    std::vector<std::thread> threads;
    for (int i : who)
      threads.emplace_back([&, i] {
        try {
          std::vector<float> in = test::randn(n, 10 * i + step, 1e-3f);
          OuterRoundStats st = averaged_or_fail(nodes[i]->average(step, "{}", in, out[i]));
          EXPECT_EQ(st.ring_size, who.size());
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (int i : who) EXPECT_EQ(errors[i], "") << "n" << i;
    for (int i : who) EXPECT_EQ(out[i], out[who[0]]);
  };
  round(1, {0, 1, 2});
  EXPECT_TRUE(contains(fingerprint(keys[3].public_key())));  // joins are logged with the key

  // n2's line goes (an editor's rewrite: a new file renamed over the old).
  std::string without = allowlist.substr(0, allowlist.rfind(public_key_hex(keys[3].public_key())));
  write_file_atomic(list_path, without.data(), without.size());
  const auto t0 = std::chrono::steady_clock::now();
  while (!contains("its key was revoked") && std::chrono::steady_clock::now() - t0 < milliseconds(1500))
    std::this_thread::sleep_for(milliseconds(20));
  EXPECT_TRUE(contains("its key was revoked")) << "not evicted within the heartbeat timeout (1500 ms)";
  EXPECT_TRUE(contains(fingerprint(keys[3].public_key()) + ") evicted"));
  // It cannot come back under its key.
  MeshNodeOptions again = swarm.node("n2-again");
  again.credentials = PeerCredentials::keyed(keys[3], allowlist_admission(list_path));
  again.join_timeout = milliseconds(2000);
  EXPECT_THROW(MeshNode back(again), Error);
  nodes[2].reset();
  // The others average on, in a ring of two.
  round(2, {0, 1});
}

// A donor whose allowlist does not hold a joiner's key refuses it during the
// handshake, without a word. Fetching a round or the donor's progress must
// say so (AuthenticationFailed: asking again will not help), not answer
// "not there yet" until the catch-up times out. A donor that admits the
// joiner but lacks the round still answers "not yet".
TEST(Mesh, ADonorRefusingThisNodesKeyIsAnAuthenticationFailureNotNotReady) {
  const NodeKey coordinator_key = NodeKey::generate(), donor_key = NodeKey::generate(),
                joiner_key = NodeKey::generate();
  const PublicKey refused = joiner_key.public_key();
  const PeerAdmission everyone = [](const PublicKey&) { return std::string(); };
  Swarm swarm(milliseconds(300), 1, {}, PeerCredentials::keyed(coordinator_key, everyone));
  MeshNodeOptions d = swarm.node("donor");
  d.log = [](const std::string& m) {
    if (std::getenv("MESH_LOG")) std::fprintf(stderr, "[donor] %s\n", m.c_str());
  };
  d.credentials = PeerCredentials::keyed(donor_key, [refused](const PublicKey& pk) {
    return pk == refused ? std::string("not on this node's allowlist") : std::string();
  });
  MeshNode donor(d);
  std::vector<float> in(1000, 1.0f), out(1000);
  ASSERT_EQ(averaged_or_fail(donor.average(1, "{}", in, out)).ring_size, 1u);  // the run is in progress: joiners get a donor
  donor.report_hash(1, 7);
  donor.publish_round(1, out);

  MeshNodeOptions j = swarm.node("joiner");
  j.credentials = PeerCredentials::keyed(joiner_key, everyone);
  MeshNode joiner(j);
  ASSERT_EQ(joiner.welcome().donor_id, donor.id());
  EXPECT_THROW(joiner.fetch_round_once(1), AuthenticationFailed);
  EXPECT_THROW(joiner.donor_progress(), AuthenticationFailed);

  MeshNodeOptions w = swarm.node("welcome");
  w.credentials = PeerCredentials::keyed(NodeKey::generate(), everyone);
  MeshNode welcome(w);
  ASSERT_EQ(welcome.welcome().donor_id, donor.id());
  EXPECT_TRUE(welcome.fetch_round_once(1).has_value());
  EXPECT_FALSE(welcome.fetch_round_once(2).has_value()) << "a round the donor does not have yet is 'not yet'";
  EXPECT_TRUE(welcome.donor_progress().has_value());
}

// A node that scales its pseudo-gradient by 100 and says so is left out of
// the ring (an outlier: it catches up from a donor); one that announces less
// than it sends is caught by its ring successor and refused for the rest of
// the run. Either way the honest nodes finish with the same average. With
// sparse compression the same holds: a node announces the norm of its input
// plus its error-feedback residual, and each arriving chunk of a source's
// contribution is checked against that source's own norm.
void byzantine_round(double scale, double announce, bool expect_banned, Compression compression = Compression::Int8,
                     bool direct = false) {
  std::mutex mu;
  std::vector<std::string> lines;
  Swarm swarm(
      milliseconds(3000), 3, {}, secret(7),
      [&](const std::string& m) {
        std::lock_guard lk(mu);
        lines.push_back(m);
      },
      true, false, direct);
  const size_t n = 30011;
  std::vector<std::vector<float>> out(3, std::vector<float>(n));
  std::vector<std::string> errors(3);
  std::vector<size_t> ring_size(3, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      try {
        MeshNodeOptions o = swarm.node("n" + std::to_string(i));
        if (i == 2) o.attack_scale = scale, o.attack_announce = announce;
        o.max_retries = 2;
        o.compression = compression;
        o.direct = direct;
        if (compression == Compression::Sparse)
          o.sparse_k = sparse_k_for_density(0.1, default_codec_block(Compression::Sparse));
        MeshNode node(o);
        std::vector<float> in = test::randn(n, 100 + i, 1e-3f);
        const std::vector<float> residual = test::randn(n, 200 + i, 3e-4f);
        SparseRound sr;
        sr.residual = residual;
        ring_size[i] = averaged_or_fail(node.average(1, "{}", in, out[i],
                                                     compression == Compression::Sparse ? &sr : nullptr))
                           .ring_size;
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(ring_size[0], 2u);
  // In the sparse all-gather the attacker may already hold every other
  // contribution when its successor aborts (each travels the ring whole);
  // it applies nothing, since the coordinator commits no round it was in
  // (the honest nodes redo it in a ring of 2, below), and it is refused.
  EXPECT_NE(errors[2], "") << "the attacker finished a round with the honest nodes";
  // The honest average: close to the mean of the two honest inputs, nowhere near 100x.
  std::vector<float> a = test::randn(n, 100, 1e-3f), b = test::randn(n, 101, 1e-3f);
  double err = 0, ref = 0;
  for (size_t k = 0; k < n; ++k) {
    const double m = 0.5 * (double(a[k]) + b[k]);
    err += (out[0][k] - m) * (out[0][k] - m);
    ref += m * m;
  }
  if (compression == Compression::Sparse) {
    // Top-k of two honest vectors: not their mean, but no larger than they are.
    double sq = 0;
    for (float v : out[0]) sq += double(v) * v;
    EXPECT_LT(std::sqrt(sq), 2.0 * std::sqrt(ref) + 1e-9);
    EXPECT_GT(sq, 0.0);
  } else {
    EXPECT_LT(std::sqrt(err / ref), 0.05);
  }
  std::lock_guard lk(mu);
  bool banned = false, outlier = false;
  for (const auto& l : lines) {
    banned |= l.find("refused for the rest of the run") != std::string::npos;
    outlier |= l.find("is above 5 x the median") != std::string::npos;
  }
  EXPECT_EQ(banned, expect_banned);
  EXPECT_EQ(outlier, !expect_banned);
}

TEST(Mesh, AnOutlierNormIsLeftOutOfTheRing) { byzantine_round(100.0, 1.0, false); }
TEST(Mesh, ANodeSendingMoreThanItAnnouncedIsCaughtAndRefused) { byzantine_round(100.0, 0.01, true); }
TEST(Mesh, SparseOutlierNormIsLeftOutOfTheRing) { byzantine_round(100.0, 1.0, false, Compression::Sparse); }
TEST(Mesh, SparseNodeSendingMoreThanItAnnouncedIsCaughtAndRefused) {
  byzantine_round(100.0, 0.01, true, Compression::Sparse);
}
// Honest values under an understated norm: caught once the announcement is
// below what its top-k keeps (at density 10% of Gaussian values, about 63%
// of the norm): the bound is of the whole vector, so it is as loose as the
// share of the norm the kept values carry.
TEST(Mesh, SparseNodeUnderstatingItsNormToAThirdIsCaught) { byzantine_round(1.0, 0.3, true, Compression::Sparse); }

// With node keys an accusation is judged on its evidence (ring_evidence.h):
// the accuser hands the coordinator its predecessor's signed messages. Node
// 2 misbehaves: it sends 100x what it announces (a true accusation against
// it), or it accuses its predecessor falsely with that node's honest
// messages (1) or with one whose signature it altered (2). Whoever is
// refused, the two honest nodes finish with the same honest average, and
// the coordinator's log names both keys.
struct Accusation {
  std::vector<std::string> errors;
  std::vector<std::vector<float>> out;
  std::vector<std::string> lines;
  std::vector<NodeKey> keys;  // coordinator, n0, n1, n2
  bool logged(const std::string& what) const {
    for (const auto& l : lines)
      if (l.find(what) != std::string::npos) return true;
    return false;
  }
  std::string log() const {  // the coordinator's lines, for a failure's message
    std::string s;
    for (const auto& l : lines) s += "\n  " + l;
    return s;
  }
};

Accusation keyed_byzantine_round(double scale, double announce, int false_accusation, bool commit_unscaled = false,
                                 Compression compression = Compression::Int8, int alter_forwarded = 0,
                                 bool direct = false) {
  Accusation a;
  std::string allowlist;
  for (int i = 0; i < 4; ++i) {
    a.keys.push_back(NodeKey::generate());
    allowlist += public_key_hex(a.keys.back().public_key()) + "\n";
  }
  const Allowlist list = Allowlist::parse(allowlist, "test allowlist");
  const PeerAdmission admit = [list](const PublicKey& pk) {
    return list.allows(pk) ? std::string() : std::string("not on the allowlist");
  };
  std::mutex mu;
  {
    // A ready timeout well past the round's 0.3 s: every member is ready at
    // once, so the ring forms as soon as all three are, and a machine loaded
    // by other tests (four copies on two cores once took over 3 s) does not
    // leave an honest member out as late (docs/RELIABILITY.md, the flake).
    Swarm swarm(milliseconds(10000), 3, {}, PeerCredentials::keyed(a.keys[0], admit), [&](const std::string& m) {
      std::lock_guard lk(mu);
      a.lines.push_back(m);
    });
    const size_t n = 30011;
    a.out.assign(3, std::vector<float>(n));
    a.errors.assign(3, "");
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i)
      threads.emplace_back([&, i] {
        try {
          MeshNodeOptions o = swarm.node("n" + std::to_string(i));
          o.credentials = PeerCredentials::keyed(a.keys[i + 1], admit);
          o.chunk_elems = 4096;  // 8 chunks: every rank has a segment of its own, and the commitment is audited
          o.compression = compression;
          o.direct = direct;
          if (compression == Compression::Sparse)
            o.sparse_k = sparse_k_for_density(0.1, default_codec_block(Compression::Sparse));
          if (i == 2) {
            o.attack_scale = scale, o.attack_announce = announce, o.attack_false_accusation = false_accusation;
            o.attack_commit_unscaled = commit_unscaled;
            o.attack_alter_forwarded = alter_forwarded;
          }
          o.max_retries = 2;
          MeshNode node(o);
          std::vector<float> in = test::randn(n, 100 + i, 1e-3f);
          SparseRound sr;
          averaged_or_fail(node.average(1, "{}", in, a.out[i], compression == Compression::Sparse ? &sr : nullptr));
        } catch (const std::exception& e) {
          a.errors[i] = e.what();
        }
      });
    for (auto& t : threads) t.join();
  }
  return a;
}

// The honest pair finishes alike; the node with key 3 (n2) is refused on
// the evidence, and nobody is called a false accuser.
void expect_refused_on_evidence(const Accusation& a, const std::string& why = "broke its announcement (norm or commitment)") {
  EXPECT_EQ(a.errors[0], "");
  EXPECT_EQ(a.errors[1], "");
  EXPECT_EQ(a.out[0], a.out[1]);
  // A sparse attacker may already hold every contribution when it is
  // caught; it still applies nothing (no round it was in is committed).
  EXPECT_NE(a.errors[2], "") << "the attacker finished a round with the honest nodes";
  EXPECT_TRUE(a.logged(fingerprint(a.keys[3].public_key()) + ") " + why + ", shown by the evidence")) << a.log();
  EXPECT_FALSE(a.logged("a false accusation")) << a.log();
}

TEST(Mesh, NodeKeysATrueAccusationWithEvidenceRefusesTheAccused) {
  expect_refused_on_evidence(keyed_byzantine_round(100.0, 0.01, 0));
}

void expect_false_accuser_refused(int mode, Compression compression = Compression::Int8) {
  const Accusation a = keyed_byzantine_round(1.0, 1.0, mode, false, compression);
  // The accused (n2's predecessor, whichever of n0 and n1 it was) is kept:
  // both honest nodes finish, in a ring of two without the accuser.
  EXPECT_EQ(a.errors[0], "");
  EXPECT_EQ(a.errors[1], "");
  // In a sparse all-gather the accused may already hold every contribution
  // when the accuser fails the round (the accuser's own went out first); it
  // applies nothing until the coordinator commits a round, and this one is
  // abandoned, so it redoes it with the other honest node.
  EXPECT_EQ(a.out[0], a.out[1]);
  EXPECT_NE(a.errors[2], "") << "the false accuser finished a round";
  EXPECT_TRUE(a.logged(fingerprint(a.keys[3].public_key()) + ") accused ring member node"));
  EXPECT_TRUE(a.logged(mode == 1 ? "is within the" : "the signature is not the accused's"));
  EXPECT_TRUE(a.logged("a false accusation; refused for the rest of the run"));
  // Both keys are named in the line that refuses the accuser.
  bool both = false;
  for (const auto& l : a.lines)
    if (l.find("a false accusation") != std::string::npos)
      both |= (l.find(fingerprint(a.keys[1].public_key())) != std::string::npos ||
               l.find(fingerprint(a.keys[2].public_key())) != std::string::npos) &&
              l.find(fingerprint(a.keys[3].public_key())) != std::string::npos;
  EXPECT_TRUE(both);
  EXPECT_FALSE(a.logged("shown by the evidence"));
}

TEST(Mesh, NodeKeysAFalseAccuserIsRefusedAndTheAccusedKept) { expect_false_accuser_refused(1); }

// A node that announces a commitment to its honest pseudo-gradient, then
// reveals the leaves of 0.5x of it and sends that (announcing the norm of
// what it sends, so no norm check can see it), is caught by the commitment
// audit when its leaf message arrives and refused on that signed message.
TEST(Mesh, NodeKeysACommitmentMismatchIsCaughtAtTheFirstHopAndRefused) {
  const Accusation a = keyed_byzantine_round(0.5, 1.0, 0, /*commit_unscaled=*/true);
  expect_refused_on_evidence(a);
  EXPECT_TRUE(a.logged("does not hash to the commitment it announced"));
}
TEST(Mesh, NodeKeysAForgedSignatureInEvidenceRefusesTheAccuser) { expect_false_accuser_refused(2); }

// The direct pattern (direct_allreduce.h): every member owns a segment and
// hears every other directly, so an attacker is caught by each owner it
// sends to, whoever its ring neighbours would have been, and refused on its
// own signed messages: its contributions above its announced norm, or its
// leaf message that does not hash to its commitment.
TEST(Mesh, NodeKeysTheDirectPatternRefusesANodeSendingMoreThanItAnnounced) {
  const Accusation a = keyed_byzantine_round(100.0, 0.01, 0, false, Compression::Int8, 0, /*direct=*/true);
  expect_refused_on_evidence(a);
}
TEST(Mesh, NodeKeysTheDirectPatternRefusesACommitmentMismatch) {
  const Accusation a = keyed_byzantine_round(0.5, 1.0, 0, /*commit_unscaled=*/true, Compression::Int8, 0, true);
  expect_refused_on_evidence(a);
  EXPECT_TRUE(a.logged("does not hash to the commitment it announced"));
}
// Shared secret: no evidence; in a run of the direct pattern the
// coordinator takes any member's word against any other, as it takes a ring
// successor's against its predecessor.
TEST(Mesh, TheDirectPatternRefusesANodeSendingMoreThanItAnnounced) {
  byzantine_round(100.0, 0.01, true, Compression::Int8, /*direct=*/true);
}

// Sparse rounds in a keyed run (sparse_evidence.h): every chunk signed by
// its author. An honest round refuses nobody; a node sending 100x what it
// announced is refused on its own signed chunks; a false accuser (honest
// chunks as evidence, or a chunk with its signature altered) is refused
// instead of the accused.
TEST(Mesh, NodeKeysAnHonestSparseRoundRefusesNobody) {
  const Accusation a = keyed_byzantine_round(1.0, 1.0, 0, false, Compression::Sparse);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.errors[i], "") << "node " << i;
  EXPECT_EQ(a.out[0], a.out[1]);
  EXPECT_EQ(a.out[0], a.out[2]);
  EXPECT_FALSE(a.logged("refused for the rest of the run"));
  EXPECT_FALSE(a.logged("accuses"));
}
TEST(Mesh, NodeKeysASparseNodeSendingMoreThanItAnnouncedIsRefusedOnItsSignedChunks) {
  const Accusation a = keyed_byzantine_round(100.0, 0.01, 0, false, Compression::Sparse);
  expect_refused_on_evidence(a);
  EXPECT_TRUE(a.logged("chunks of its sparse contribution, signed by the accused"));
}
// A forwarder that alters another node's chunk within that node's bound
// (one kept value's sign: no norm check sees it) is caught by its successor
// on receipt, refused on its own signature as the chunk's sender, and the
// round is redone without it: the honest pair's average is theirs alone.
TEST(Mesh, NodeKeysASparseForwarderThatAltersAnothersChunkIsRefusedAndTheRoundRedoneWithoutIt) {
  const Accusation a = keyed_byzantine_round(1.0, 1.0, 0, false, Compression::Sparse, /*alter_forwarded=*/1);
  expect_refused_on_evidence(a, "sent another node's chunk altered");
  EXPECT_TRUE(a.logged("the accused altered it"));
  // The line names the forwarder's key, the accuser's, and the author's (n2's predecessor: n0 or n1).
  bool names_all = false;
  for (const auto& l : a.lines)
    if (l.find("sent another node's chunk altered") != std::string::npos)
      names_all |= l.find(fingerprint(a.keys[3].public_key())) != std::string::npos &&
                   l.find(fingerprint(a.keys[1].public_key())) != std::string::npos &&
                   l.find(fingerprint(a.keys[2].public_key())) != std::string::npos;
  EXPECT_TRUE(names_all);
}
TEST(Mesh, NodeKeysASparseFalseAccuserIsRefusedAndTheAccusedKept) {
  expect_false_accuser_refused(1, Compression::Sparse);
}
TEST(Mesh, NodeKeysASparseFalseAccuserWithAForgedSignatureIsRefused) {
  expect_false_accuser_refused(2, Compression::Sparse);
}

// A round that one member reports failed after the others completed it
// (its last message lost, or a node that wants the others to disagree) is
// redone by every member: nobody applies the abandoned attempt while the
// others redo it. The nodes stay in the run until all are done, as a
// training node does, and report the hash of what they applied. Dense and
// sparse alike.
void disowned_round(Compression compression) {
  std::mutex mu;
  std::vector<std::string> lines;
  Swarm swarm(milliseconds(3000), 3, {}, secret(7), [&](const std::string& m) {
    std::lock_guard lk(mu);
    lines.push_back(m);
  });
  const size_t n = 30011;
  std::vector<std::vector<float>> out(3, std::vector<float>(n));
  std::vector<std::string> errors(3);
  std::vector<OuterRoundStats> stats(3);
  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      try {
        MeshNodeOptions o = swarm.node("n" + std::to_string(i));
        o.attack_disown_completed_round = i == 2;
        o.log = [&, i](const std::string& m) {
          std::lock_guard lk(mu);
          lines.push_back(str("n", i, ": ", m));
        };
        o.max_retries = 2;
        o.compression = compression;
        if (compression == Compression::Sparse)
          o.sparse_k = sparse_k_for_density(0.1, default_codec_block(Compression::Sparse));
        MeshNode node(o);
        const std::vector<float> in = test::randn(n, 100 + i, 1e-3f);
        SparseRound sr;
        try {
          stats[i] =
              averaged_or_fail(node.average(1, "{}", in, out[i], compression == Compression::Sparse ? &sr : nullptr));
          uint64_t h = 1469598103934665603ull;  // FNV-1a of the bytes applied
          for (const uint8_t* b = reinterpret_cast<const uint8_t*>(out[i].data()); b != reinterpret_cast<const uint8_t*>(out[i].data() + n); ++b)
            h = (h ^ *b) * 1099511628211ull;
          node.report_hash(1, h);
        } catch (...) {
          ++finished;
          throw;
        }
        ++finished;
        const auto t0 = std::chrono::steady_clock::now();
        while (finished.load() < 3 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(40))
          std::this_thread::sleep_for(milliseconds(20));
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(errors[i], "") << "node " << i;
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(out[0], out[2]);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(stats[i].ring_size, 3u) << "node " << i;
    EXPECT_EQ(stats[i].retries, 1) << "node " << i << ": the attempt that completed here was not redone";
  }
  for (int tries = 0; tries < 100 && swarm.coordinator->agreed_steps() < 1; ++tries)
    std::this_thread::sleep_for(milliseconds(20));
  EXPECT_EQ(swarm.coordinator->agreed_steps(), 1);
  EXPECT_EQ(swarm.coordinator->disagreed_steps(), 0);
  if (::testing::Test::HasFailure()) {  // failed once in CI under load (2026-12-04): what the coordinator and the nodes saw
    std::lock_guard lk(mu);
    for (const auto& l : lines) std::fprintf(stderr, "%s\n", l.c_str());
  }
}

TEST(Mesh, ARoundFailedAfterOthersCompletedItIsRedoneByAllDense) { disowned_round(Compression::Int8); }
TEST(Mesh, ARoundFailedAfterOthersCompletedItIsRedoneByAllSparse) { disowned_round(Compression::Sparse); }

TEST(Mesh, NodeThatLeavesMidRoundIsDroppedAndTheOthersFinish) {
  Swarm swarm(milliseconds(3000));
  const size_t n = 50000;
  std::vector<std::vector<float>> out(3, std::vector<float>(n));
  std::vector<OuterRoundStats> stats(3);
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      try {
        MeshNodeOptions o = swarm.node("n" + std::to_string(i));
        // Node 2 reports ready, takes part in no real round (an empty
        // vector: its ring "completes" at once, so the coordinator never
        // commits it), and leaves when its first attempt is abandoned.
        if (i == 2) o.max_retries = 0;
        auto node = std::make_unique<MeshNode>(o);
        std::vector<float> in = test::randn(n, i, 1e-3f);
        if (i == 2) {
          std::vector<float> tmp(n);
          node->average(1, "{}", std::span<const float>(in.data(), 0), std::span<float>(tmp.data(), 0));
          return;
        }
        stats[i] = averaged_or_fail(node->average(1, "{}", in, out[i]));
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  EXPECT_EQ(out[0], out[1]);
  // Whether the goodbye reached the coordinator before or after the ring was
  // announced, the round completes with the two that are left.
  EXPECT_EQ(stats[0].ring_size, 2u);
  EXPECT_EQ(stats[1].ring_size, 2u);
}

}  // namespace
}  // namespace intellect

namespace intellect {
namespace {

// A node's mesh log, kept for a test to look into (the node's threads write it).
struct LogCapture {
  std::mutex mu;
  std::string text;
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(mu);
      text += m + "\n";
    };
  }
  bool has(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu);
    return text.find(what) != std::string::npos;
  }
};

// The coordinator is gone and the node's heartbeat thread keeps trying to
// reconnect (up to round_timeout, two minutes here). A round started
// meanwhile only queues its Ready (it does not wait for the reconnection),
// and cancel() ends it within a fraction of a second with StoppedOnRequest
// (docs/RELIABILITY.md, "A SIGTERM while the coordinator is gone").
TEST(Mesh, CancelEndsARoundWaitingForACoordinatorThatIsGone) {
  Swarm swarm(milliseconds(10000), 2);
  LogCapture captured;
  MeshNodeOptions o = swarm.node("alone");
  o.round_timeout = milliseconds(120000);
  o.log = captured.sink();
  auto logged = [&](const std::string& what) { return captured.has(what); };
  MeshNode node(std::move(o));
  swarm.kill();
  for (int t = 0; t < 100 && !logged("lost the coordinator; reconnecting"); ++t)
    std::this_thread::sleep_for(milliseconds(50));
  ASSERT_TRUE(logged("lost the coordinator; reconnecting")) << captured.text;
  std::vector<float> in(1000, 1.0f), out(1000);
  std::string error;
  std::thread round([&] {
    try {
      node.average(1, "{}", in, out);
      error = "<returned>";
    } catch (const StoppedOnRequest& e) {
      error = e.what();
    } catch (const std::exception& e) {
      error = std::string("other: ") + e.what();
    }
  });
  std::this_thread::sleep_for(milliseconds(500));
  const auto t0 = std::chrono::steady_clock::now();
  node.cancel();
  round.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(1500));
  EXPECT_NE(error.find("the node stops"), std::string::npos) << error;
}

// A round started while the coordinator is away is queued, and the
// reconnection sends it: the coordinator, restarted on the same port from
// its state file, forms the ring (of one here) and the round completes.
TEST(Mesh, ARoundStartedWhileTheCoordinatorIsAwayIsSentByTheReconnection) {
  const std::string state = ::testing::TempDir() + "/mesh_requeue_coordinator.json";
  std::filesystem::remove(state);
  CoordinatorOptions co;
  co.credentials = secret(7);
  co.heartbeat_interval = milliseconds(200);
  co.membership.heartbeat_timeout = milliseconds(5000);
  co.membership.ready_timeout = milliseconds(2000);
  co.membership.min_ring = 1;
  co.state_file = state;
  co.log = [](const std::string& m) { if (std::getenv("MESH_LOG")) std::fprintf(stderr, "[coord] %s\n", m.c_str()); };
  auto coordinator = std::make_unique<Coordinator>(co);
  const uint16_t port = coordinator->port();
  std::atomic<bool> stop{false};
  std::thread ct([&] { coordinator->run(stop); });
  LogCapture captured;
  MeshNodeOptions o;
  o.coordinator = "127.0.0.1:" + std::to_string(port);
  o.name = "alone";
  o.credentials = secret(7);
  o.round_timeout = milliseconds(30000);
  o.message_timeout = milliseconds(3000);
  o.log = captured.sink();
  auto logged = [&](const std::string& what) { return captured.has(what); };
  MeshNode node(std::move(o));
  stop = true;
  ct.join();
  coordinator.reset();
  for (int t = 0; t < 100 && !logged("lost the coordinator; reconnecting"); ++t)
    std::this_thread::sleep_for(milliseconds(50));
  ASSERT_TRUE(logged("lost the coordinator; reconnecting")) << captured.text;
  std::vector<float> in(1000), out(1000, 0.0f);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i) * 0.25f;
  std::string error;
  std::optional<OuterRoundStats> stats;
  std::thread round([&] {
    try {
      stats = averaged_or_fail(node.average(1, "{}", in, out));
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(milliseconds(500));
  co.listen = "127.0.0.1:" + std::to_string(port);
  coordinator = std::make_unique<Coordinator>(co);
  stop = false;
  ct = std::thread([&] { coordinator->run(stop); });
  round.join();
  stop = true;
  ct.join();
  ASSERT_TRUE(stats.has_value()) << error << "\n" << captured.text;
  EXPECT_EQ(stats->ring_size, 1u);
  EXPECT_EQ(out, in) << "a ring of one averages to its own input";
  EXPECT_TRUE(logged("back with the coordinator")) << captured.text;
}

// A coordinator whose loop stalls past the heartbeat timeout (a slow fsync of
// its state file, a starved machine) finds the heartbeats sent meanwhile
// waiting for it: the nodes that sent them are not evicted, and the next
// round goes on with all of them.
TEST(Mesh, CoordinatorStallDoesNotEvictNodesThatKeptBeating) {
  std::atomic<int> stall{0};
  Swarm swarm(milliseconds(5000), 3, [&] {
    if (stall.load() == 1) {
      std::this_thread::sleep_for(milliseconds(2500));  // heartbeat timeout 1500 ms
      stall = 2;
    }
  });
  std::vector<std::string> errors(3);
  std::vector<size_t> ring2(3, 0);
  std::atomic<int> first_done{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i)
    threads.emplace_back([&, i] {
      try {
        MeshNode node(swarm.node("n" + std::to_string(i)));
        std::vector<float> in(1000, float(i)), out(1000);
        averaged_or_fail(node.average(1, "{}", in, out));
        if (++first_done == 3) stall = 1;
        for (int t = 0; t < 200 && stall.load() != 2; ++t) std::this_thread::sleep_for(milliseconds(50));
        std::this_thread::sleep_for(milliseconds(1000));  // past the grace after the stall
        ring2[i] = averaged_or_fail(node.average(2, "{}", in, out)).ring_size;
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(stall.load(), 2);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(errors[i], "") << "node " << i;
    EXPECT_EQ(ring2[i], 3u) << "node " << i << ": a node was evicted for heartbeats the coordinator had not read";
  }
}

// Bandwidth-aware ring order (issue 15 part 5). Four nodes whose emulated
// links run at 200 Mbit/s, except n2 <-> n3 at 10 Mbit/s; ids follow the
// join order, so the naive ring (ascending ids) 1 -> 2 -> 3 -> 4 crosses the
// slow link. The first round measures it (each node reports its link to its
// successor), and the coordinator's next rings avoid it: those rounds are
// several times faster than the first, and than the naive order's rounds.
struct OrderedRun {
  std::vector<double> seconds;  // per round: the slowest node's all-reduce
  std::vector<std::string> rings;  // the coordinator's ring lines
  double slow_link_mbit = 0;       // what n2 measured on its link to n3 in round 1
  uint64_t slow_link_to = 0;
};

OrderedRun run_over_a_slow_link(bool order_by_rate, int rounds) {
  std::mutex log_mu;
  OrderedRun run;
  Swarm swarm(milliseconds(5000), 4, {}, secret(7), [&](const std::string& m) {
    std::lock_guard<std::mutex> lock(log_mu);
    if (m.find(": ring of ") != std::string::npos) run.rings.push_back(m);
  }, order_by_rate);
  std::vector<std::unique_ptr<MeshNode>> nodes;
  for (int i = 1; i <= 4; ++i) {  // one after another: ids 1..4
    MeshNodeOptions o = swarm.node("n" + std::to_string(i));
    o.emulate_link.rate_bytes_per_s = 200e6 / 8;
    o.emulate_link.peer_rate_bytes_per_s =
        slow_peers_of(o.name, "n2<>n3", 10e6 / 8);
    nodes.push_back(std::make_unique<MeshNode>(o));
    EXPECT_EQ(nodes.back()->id(), static_cast<uint64_t>(i));
  }
  const size_t n = size_t{1} << 18;  // int8: ~0.4 MB sent per node and round
  std::vector<std::vector<std::vector<float>>> out(rounds, std::vector<std::vector<float>>(4));
  std::vector<std::vector<OuterRoundStats>> stats(rounds, std::vector<OuterRoundStats>(4));
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      try {
        for (int r = 0; r < rounds; ++r) {
          const std::vector<float> in = test::randn(n, 10 * i + r, 1e-3f);
          out[r][i].resize(n);
          stats[r][i] = averaged_or_fail(nodes[i]->average(r + 1, "{}", in, out[r][i]));
        }
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(errors[i], "") << "node " << i + 1;
  for (int r = 0; r < rounds; ++r) {
    double slowest = 0;
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(stats[r][i].ring_size, 4u);
      EXPECT_EQ(out[r][i], out[r][0]) << "round " << r + 1 << ": every node the same bits";
      slowest = std::max(slowest, stats[r][i].seconds);
    }
    run.seconds.push_back(slowest);
  }
  run.slow_link_mbit = stats[0][1].link_mbit;
  run.slow_link_to = stats[0][1].link_to;
  return run;
}

bool ring_line_crosses(const std::string& line, const std::string& a, const std::string& b) {
  // "(1 -> 2 -> 3 -> 4)": a and b are neighbours, either way, or the ends.
  const size_t open = line.find(" ("), close = line.find("),", open);
  const std::string ring = " " + line.substr(open + 2, close - open - 2) + " -> ";
  std::vector<std::string> ids;
  for (size_t at = 1; at < ring.size();) {
    const size_t arrow = ring.find(" -> ", at);
    ids.push_back(ring.substr(at, arrow - at));
    at = arrow + 4;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& x = ids[i];
    const std::string& y = ids[(i + 1) % ids.size()];
    if ((x == a && y == b) || (x == b && y == a)) return true;
  }
  return false;
}

TEST(Mesh, RingsAreOrderedAroundASlowLinkAndRunFaster) {
  const int rounds = 4;
  const OrderedRun ordered = run_over_a_slow_link(true, rounds);
  const OrderedRun naive = run_over_a_slow_link(false, 2);
  ASSERT_EQ(ordered.rings.size(), static_cast<size_t>(rounds));
  ASSERT_EQ(naive.rings.size(), 2u);
  std::printf("ring over a 10 Mbit/s link among 200 Mbit/s ones (4 nodes, 2^18 values int8):\n");
  for (int r = 0; r < rounds; ++r) std::printf("  ordered round %d: %.3f s  %s\n", r + 1, ordered.seconds[r],
                                               ordered.rings[r].c_str());
  for (int r = 0; r < 2; ++r) std::printf("  naive round %d: %.3f s  %s\n", r + 1, naive.seconds[r],
                                          naive.rings[r].c_str());
  // n2 measured its link to n3 on the first round's traffic.
  EXPECT_EQ(ordered.slow_link_to, 3u);
  EXPECT_GT(ordered.slow_link_mbit, 5.0);
  // Above the cap by up to a message's crossing time: a send returns when
  // its message starts crossing, as a socket's does (link_emulation.h), so
  // the last message's time is not in the blocked time. Far below 200.
  EXPECT_LT(ordered.slow_link_mbit, 20.0);
  // The first ring is the naive one; every later one avoids 2 - 3.
  EXPECT_TRUE(ring_line_crosses(ordered.rings[0], "2", "3")) << ordered.rings[0];
  for (int r = 1; r < rounds; ++r) {
    EXPECT_FALSE(ring_line_crosses(ordered.rings[r], "2", "3")) << ordered.rings[r];
    EXPECT_LT(ordered.seconds[r], 0.5 * ordered.seconds[0]) << "round " << r + 1;
    EXPECT_LT(ordered.seconds[r], 0.5 * naive.seconds[1]) << "round " << r + 1;
  }
  for (const std::string& line : naive.rings) EXPECT_TRUE(ring_line_crosses(line, "2", "3")) << line;
}

}  // namespace
}  // namespace intellect
