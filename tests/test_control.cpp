// Coordinator protocol messages: every kind round-trips, and malformed bytes
// (short, trailing, oversized strings, bad values, random mutations) are
// refused with an Error, never a crash.
#include "dist/control.h"

#include <functional>
#include <limits>
#include "test_util.h"
#include "util/error.h"
#include "util/rng.h"

namespace intellect {
namespace {

using namespace control;

std::vector<Message> samples() {
  Welcome w{3, 1, 7, 42, 2000, 6000, R"({"rows":12})", 2, "10.0.0.2:7001", 1, {}};
  w.stripe_donors = {{4, "10.0.0.4:7001"}, {5, "10.0.0.5:7001"}};
  StateRequest sr{2, 41, 7, {}};
  sr.digest[0] = 9;
  sr.end_chunk = 12;
  StateInfo si{1, 40, {}, 10000, 4096, 3};
  si.digest[31] = 1;
  return {Join{"node-a", "10.0.0.1:7000", 8, "10.0.0.1:7001", 17, R"({"diloco":{"outer_lr":0.7}})"},
          w,
          Heartbeat{3, 41, {}},
          Leave{3, "SIGTERM"},
          Ready{3, 42, R"({"rows":100})", 5, 940.5f},
          RingAnnounce{42, 7, 99, {{1, "10.0.0.1:7000", -1.0f, "node-a"}, {3, "10.0.0.3:7000", 2.5f, "node-c"}}},
          RingFailed{3, 42, 99, "next node timed out", 4, 0, {}},
          OuterHash{3, 42, 0x1234567890abcdefull},
          Refused{"wrong protocol"},
          PeerHello{3, 99, 5},
          DonorRequest{3, 2},
          DonorAssign{1, "10.0.0.1:7001"},
          Late{43},
          sr,
          si,
          Rejoin{3, "node-a", "10.0.0.1:7000", "10.0.0.1:7001", -1},
          StatePending{250},
          Rewound{40, 2},
          RoundDone{3, 42, 99},
          RoundCommit{42, 99}};
}

TEST(Control, EveryMessageRoundTrips) {
  for (const Message& m : samples()) {
    SCOPED_TRACE(name(m));
    const Message back = decode(encode(m), "test");
    EXPECT_EQ(back.index(), m.index());
    EXPECT_EQ(encode(back), encode(m));
  }
  const auto ring = std::get<RingAnnounce>(decode(encode(samples()[5]), "t"));
  EXPECT_EQ(ring.members[1].address, "10.0.0.3:7000");
  EXPECT_EQ(ring.members[1].name, "node-c");
  const auto ready = std::get<Ready>(decode(encode(samples()[4]), "t"));
  EXPECT_EQ(ready.link_to, 5u);
  EXPECT_EQ(ready.link_mbit, 940.5f);
  // "Holds no state" survives the trip; a held step that is neither is refused.
  EXPECT_EQ(std::get<Heartbeat>(decode(encode(Heartbeat{3, -1, {}}), "t")).held_step, -1);
  EXPECT_EQ(std::get<Rejoin>(decode(encode(samples()[15]), "t")).held_step, -1);
  EXPECT_THROW(decode(encode(Heartbeat{3, -2, {}}), "t"), Error);
  const auto done = std::get<RoundDone>(decode(encode(RoundDone{3, 42, 99}), "t"));
  EXPECT_EQ(done.node_id, 3u);
  EXPECT_EQ(done.outer_step, 42);
  EXPECT_EQ(done.round, 99u);
  const auto commit = std::get<RoundCommit>(decode(encode(RoundCommit{42, 99}), "t"));
  EXPECT_EQ(commit.outer_step, 42);
  EXPECT_EQ(commit.round, 99u);
  // An outer step past INT64_MAX is refused, as in every other message.
  std::vector<uint8_t> bad = encode(RoundCommit{42, 99});
  for (size_t i = 1; i < 9; ++i) bad[i] = 0xff;
  EXPECT_THROW(decode(bad, "t"), Error);
}

TEST(Control, MalformedMessagesAreRefused) {
  for (const Message& m : samples()) {
    const std::vector<uint8_t> good = encode(m);
    for (size_t cut = 0; cut < good.size(); ++cut) {  // every truncation
      std::vector<uint8_t> b(good.begin(), good.begin() + cut);
      EXPECT_THROW(decode(b, "t"), Error) << name(m) << " cut at " << cut;
    }
    std::vector<uint8_t> extra = good;
    extra.push_back(0);
    EXPECT_THROW(decode(extra, "t"), Error) << name(m) << " with a trailing byte";
  }
  EXPECT_THROW(decode({200}, "t"), Error);
  // a string length far beyond its cap is refused before any copy
  std::vector<uint8_t> huge = {1, 0xff, 0xff, 0xff, 0x7f};
  EXPECT_NE(test::error_of([&] { decode(huge, "peer 1.2.3.4"); }).find("peer 1.2.3.4"), std::string::npos);
  EXPECT_THROW(decode(encode(Join{"a", "b", 0, "", -1, ""}), "t"), Error);
  EXPECT_THROW(decode(encode(Welcome{1, 1, 1, 1, 2000, 1000, "", 0, "", 0, {}}), "t"), Error);
  {  // further donors: never the donor itself, never without an address, at most kMaxStripeDonors
    Welcome w{1, 1, 1, 1, 2000, 6000, "", 2, "a:1", 0, {}};
    w.stripe_donors = {{2, "b:1"}};
    EXPECT_THROW(decode(encode(w), "t"), Error);
    w.stripe_donors = {{3, ""}};
    EXPECT_THROW(decode(encode(w), "t"), Error);
    w.stripe_donors = {{3, "c:1"}};
    EXPECT_EQ(std::get<Welcome>(decode(encode(w), "t")).stripe_donors[0].address, "c:1");
    std::vector<uint8_t> many = encode(Welcome{1, 1, 1, 1, 2000, 6000, "", 2, "a:1", 0, {}});
    many.back() = static_cast<uint8_t>(kMaxStripeDonors + 1);  // the count, and no donors after it
    EXPECT_NE(test::error_of([&] { decode(many, "t"); }).find("at most"), std::string::npos);
  }
  EXPECT_THROW(decode(encode(RingAnnounce{1, 1, 1, {}}), "t"), Error);
  EXPECT_THROW(decode(encode(PeerHello{1, 1, kMaxRingLanes}), "t"), Error);  // no such ring lane
  EXPECT_THROW(decode(encode(StateInfo{1, 1, {}, 10000, 4096, 2}), "t"), Error);  // 10000 bytes need 3 chunks
  EXPECT_THROW(decode(encode(StateInfo{1, 1, {}, 10, 0, 0}), "t"), Error);        // no chunk size
  EXPECT_THROW(decode(encode(StatePending{0}), "t"), Error);                       // retry at once: a busy loop
  EXPECT_THROW(decode(encode(StatePending{600000}), "t"), Error);
  EXPECT_THROW(decode(encode(StateRequest{4, 1, 0, {}}), "t"), Error);            // no such kind
  EXPECT_THROW(decode(encode(StateRequest{1, 1, 5, {}, 4}), "t"), Error);         // chunks [5, 4): backwards
  EXPECT_THROW(decode(encode(Ready{3, 42, "", 5, -1.0f}), "t"), Error);           // not a link rate
  EXPECT_THROW(decode(encode(Ready{3, 42, "", 5, std::numeric_limits<float>::quiet_NaN()}), "t"), Error);
  EXPECT_THROW(decode(encode(Ready{3, 42, "", 5, 1e9f}), "t"), Error);
  // A member name past its cap (a coordinator never sends one) is refused.
  EXPECT_THROW(decode(encode(RingAnnounce{1, 1, 1, {{1, "a:1", -1.0f, std::string(kMaxName + 1, 'n')}}}), "t"), Error);
}

TEST(Control, RandomMutationsNeverCrash) {
  int refused = 0, accepted = 0;
  for (uint64_t i = 0; i < 20000; ++i) {
    std::vector<uint8_t> b = encode(samples()[i % samples().size()]);
    const size_t flips = 1 + hash_u64(1, i) % 4;
    for (size_t f = 0; f < flips; ++f)
      b[hash_u64(2, i * 8 + f) % b.size()] = static_cast<uint8_t>(hash_u64(3, i * 8 + f));
    try {
      decode(b, "fuzz");
      ++accepted;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(accepted, 0);
}

NodeStatus sample_status() {
  NodeStatus s;
  s.inner_step = 120;
  s.total_steps = 1000;
  s.has_loss = true;
  s.loss = 3.25;
  s.tokens_per_s = 51234.5;
  s.gpus = 8;
  s.device = "NVIDIA H200";
  s.memory_bytes = uint64_t{70} << 30;
  s.wall_s = 600;
  s.outer_blocked_s = 12.5;
  s.eta_s = 4400;
  s.outer_step = 3;
  s.allreduce_s = 4.1;
  s.outer_bytes = 123456789;
  s.outer_retries = 1;
  s.join_s = 30.5;
  s.join_bytes = 987654321;
  return s;
}

TEST(Control, HeartbeatCarriesNodeStatus) {
  Heartbeat h{3, 41, sample_status()};
  const std::vector<uint8_t> wire = encode(h);
  const Heartbeat back = std::get<Heartbeat>(decode(wire, "t"));
  ASSERT_TRUE(back.status.has_value());
  EXPECT_EQ(back.status->device, "NVIDIA H200");
  EXPECT_EQ(back.status->inner_step, 120);
  EXPECT_DOUBLE_EQ(back.status->loss, 3.25);
  EXPECT_FALSE(back.status->has_val_loss);
  EXPECT_EQ(back.status->join_bytes, 987654321u);
  EXPECT_EQ(encode(back), wire);
  // A node with nothing to report yet sends the heartbeat of old: still a heartbeat.
  EXPECT_FALSE(std::get<Heartbeat>(decode(encode(Heartbeat{3, 41, {}}), "t")).status.has_value());
  EXPECT_EQ(encode(Heartbeat{3, 41, {}}).size(), 17u);
  // Every truncation inside the status block is refused (at 17 bytes it is a plain heartbeat).
  for (size_t cut = 18; cut < wire.size(); ++cut)
    EXPECT_THROW(decode(std::vector<uint8_t>(wire.begin(), wire.begin() + cut), "t"), Error) << "cut at " << cut;
  std::vector<uint8_t> extra = wire;
  extra.push_back(0);
  EXPECT_THROW(decode(extra, "t"), Error);
}

TEST(Control, NodeStatusFiguresAreValidated) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  struct Case {
    const char* what;
    std::function<void(NodeStatus&)> spoil;
    const char* field;  // the error names it
  };
  const std::vector<Case> cases = {
      {"NaN loss", [&](NodeStatus& s) { s.loss = nan; }, "loss"},
      {"infinite rate", [&](NodeStatus& s) { s.tokens_per_s = inf; }, "tokens_per_s"},
      {"negative rate", [](NodeStatus& s) { s.tokens_per_s = -1; }, "tokens_per_s"},
      {"ETA below -1", [](NodeStatus& s) { s.eta_s = -2; }, "eta_s"},
      {"absurd wall time", [](NodeStatus& s) { s.wall_s = 1e12; }, "wall_s"},
      {"5000 GPUs", [](NodeStatus& s) { s.gpus = 5000; }, "GPUs"},
      {"a device name past its cap", [](NodeStatus& s) { s.device = std::string(kMaxDevice + 1, 'x'); }, "device"},
      {"a negative inner step", [](NodeStatus& s) { s.inner_step = -5; }, "inner_step"},
  };
  for (const Case& c : cases) {
    NodeStatus s = sample_status();
    c.spoil(s);
    const std::string err = test::error_of([&] { decode(encode(Heartbeat{3, 41, s}), "node 9"); });
    EXPECT_NE(err.find(c.field), std::string::npos) << c.what << ": " << err;
    EXPECT_NE(err.find("node 9"), std::string::npos) << c.what << ": " << err;
  }
  // A loss whose flag says there is none: decode(encode(x)) would not give x back.
  std::vector<uint8_t> wire = encode(Heartbeat{3, 41, sample_status()});
  const size_t flags_at = 17 + 1 + 8 + 8;  // heartbeat, status version, inner_step, total_steps
  ASSERT_EQ(wire[flags_at], 1);            // the sample has a loss, no val loss
  wire[flags_at] = 0;
  EXPECT_NE(test::error_of([&] { decode(wire, "t"); }).find("does not have"), std::string::npos);
  // Another release's status block: refused with what to do.
  wire = encode(Heartbeat{3, 41, sample_status()});
  wire[17] = kNodeStatusVersion + 1;
  EXPECT_NE(test::error_of([&] { decode(wire, "t"); }).find("same intellect release"), std::string::npos);
}

}  // namespace
}  // namespace intellect

namespace intellect::control {
TEST(Control, LongReasonsAreClippedNotRefused) {
  RingFailed f{3, 42, 99, std::string(1000, 'x') + "\xc3\xa9", 0, 7, {}};
  const auto back = std::get<RingFailed>(decode(encode(f), "t"));
  EXPECT_LE(back.reason.size(), kMaxName);
  EXPECT_EQ(back.reason.substr(back.reason.size() - 3), "...");
  EXPECT_EQ(back.accused, 7u);
  const auto r = std::get<Refused>(decode(encode(Refused{std::string(300, 'y')}), "t"));
  EXPECT_LE(r.reason.size(), kMaxName);
}
}  // namespace intellect::control
