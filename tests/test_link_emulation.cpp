// The emulated WAN link (dist/link_emulation.h) that tests and benchmarks put
// under ring traffic: its rate cap, its one-way delay with jitter, order,
// draining, and failures of the link beneath it.
#include <gtest/gtest.h>

#include <thread>

#include <chrono>
#include <mutex>
#include <vector>

#include "dist/link_emulation.h"
#include "test_util.h"
#include "util/error.h"

namespace intellect {
namespace {

using namespace std::chrono_literals;

// Records when each message reached it, and what it was.
struct RecordingLink : RingLink {
  std::mutex mu;
  std::vector<std::pair<RingClock::time_point, std::vector<uint8_t>>> got;
  bool fail_sends = false;
  void send_to_next(std::span<const uint8_t> msg, RingClock::time_point) override {
    std::lock_guard<std::mutex> lock(mu);
    if (fail_sends) fail("the link beneath is gone");
    got.push_back({RingClock::now(), std::vector<uint8_t>(msg.begin(), msg.end())});
  }
  std::vector<uint8_t> recv_from_prev(RingClock::time_point) override { return {}; }
  void abort() noexcept override {}
};

double ms_between(RingClock::time_point a, RingClock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

TEST(LinkEmulation, DelayWithJitterKeepsOrder) {
  RecordingLink inner;
  LinkEmulation e;
  e.delay = 40ms;
  e.jitter = 30ms;
  EmulatedRingLink link(inner, e);
  std::vector<RingClock::time_point> sent;
  for (uint8_t i = 0; i < 20; ++i) {
    sent.push_back(RingClock::now());
    const uint8_t b[1] = {i};
    link.send_to_next(b, RingClock::now() + 10s);
  }
  link.drain(RingClock::now() + 10s);
  ASSERT_EQ(inner.got.size(), 20u);
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_EQ(inner.got[i].second[0], i) << "jitter must never reorder";
    EXPECT_GE(ms_between(sent[i], inner.got[i].first), 10.0 - 1.0);  // delay - jitter
    if (i) {
      EXPECT_GE(inner.got[i].first, inner.got[i - 1].first);
    }
  }
  // Not every message waits the same: jitter is there. Sent further apart
  // than delay + jitter, so no message is held back behind an earlier one's
  // longer draw (back to back, one long first draw holds all twenty and
  // their waits all come out alike: that failed about one run in twenty).
  RecordingLink spaced_inner;
  EmulatedRingLink spaced(spaced_inner, e);
  std::vector<RingClock::time_point> at;
  for (uint8_t i = 0; i < 8; ++i) {
    at.push_back(RingClock::now());
    const uint8_t b[1] = {i};
    spaced.send_to_next(b, RingClock::now() + 10s);
    std::this_thread::sleep_for(75ms);
  }
  spaced.drain(RingClock::now() + 10s);
  ASSERT_EQ(spaced_inner.got.size(), 8u);
  double lo = 1e9, hi = 0;
  for (size_t i = 0; i < 8; ++i) {
    lo = std::min(lo, ms_between(at[i], spaced_inner.got[i].first));
    hi = std::max(hi, ms_between(at[i], spaced_inner.got[i].first));
  }
  EXPECT_GT(hi - lo, 5.0);
}

TEST(LinkEmulation, RateCapPacesTheSender) {
  RecordingLink inner;
  LinkEmulation e;
  e.rate_bytes_per_s = 10e6;  // 80 Mbit/s
  EmulatedRingLink link(inner, e);
  const std::vector<uint8_t> msg(100000);  // 10 ms each at that rate
  const auto t0 = RingClock::now();
  for (int i = 0; i < 10; ++i) link.send_to_next(msg, RingClock::now() + 10s);
  link.drain(RingClock::now() + 10s);
  const double ms = ms_between(t0, RingClock::now());
  EXPECT_GE(ms, 100.0 - 2.0) << "1 MB at 10 MB/s";
  EXPECT_LT(ms, 400.0);
  ASSERT_EQ(inner.got.size(), 10u);
  // Each message is handed on once its last byte has crossed: the k-th
  // after (k + 1) message times, whatever the sender's own timing.
  for (size_t k = 0; k < 10; ++k)
    EXPECT_GE(ms_between(t0, inner.got[k].first), 10.0 * double(k + 1) - 1.0) << "message " << k;
}

// The sender may bring the next message while one crosses (a socket's send
// buffer): a sender that is a little late each time does not idle the link.
TEST(LinkEmulation, ALateSenderDoesNotIdleTheLink) {
  RecordingLink inner;
  LinkEmulation e;
  e.rate_bytes_per_s = 10e6;
  EmulatedRingLink link(inner, e);
  const std::vector<uint8_t> msg(50000);  // 5 ms each
  const auto t0 = RingClock::now();
  for (int i = 0; i < 20; ++i) {
    link.send_to_next(msg, RingClock::now() + 10s);
    std::this_thread::sleep_for(2ms);  // the sender's own work between messages, under a message's time
  }
  link.drain(RingClock::now() + 10s);
  const double ms = ms_between(t0, inner.got.back().first);
  EXPECT_GE(ms, 100.0 - 1.0);
  EXPECT_LT(ms, 100.0 + 25.0) << "20 x 2 ms of the sender's lateness idled the link";
}

TEST(LinkEmulation, FailureBeneathReachesTheSender) {
  RecordingLink inner;
  inner.fail_sends = true;
  LinkEmulation e;
  e.delay = 5ms;
  EmulatedRingLink link(inner, e);
  const uint8_t b[1] = {1};
  link.send_to_next(b, RingClock::now() + 10s);
  EXPECT_THROW(link.drain(RingClock::now() + 10s), Error);
  EXPECT_THROW(link.send_to_next(b, RingClock::now() + 10s), Error);
}

TEST(LinkEmulation, JitterAboveTheDelayIsRefused) {
  RecordingLink inner;
  LinkEmulation e;
  e.delay = 5ms;
  e.jitter = 6ms;
  EXPECT_THROW(EmulatedRingLink(inner, e), Error);
  EXPECT_EQ(e.describe(), "no rate cap, 5 ms +- 6 ms one way");
}

// Slower links to named peers (mesh.emulate_link_slow): each node picks the
// entries it sends on; "A<>B" is both ways.
TEST(LinkEmulation, SlowLinksToNamedPeers) {
  EXPECT_EQ(slow_peers_of("node-0", "node-0>node-1,node-2<>node-3,node-1>node-0", 5.0),
            (std::map<std::string, double>{{"node-1", 5.0}}));
  EXPECT_EQ(slow_peers_of("node-3", "node-0>node-1,node-2<>node-3", 5.0),
            (std::map<std::string, double>{{"node-2", 5.0}}));
  EXPECT_TRUE(slow_peers_of("node-9", "node-0>node-1", 5.0).empty());
  for (const char* bad : {"node-0", "node-0>", ">node-1", "a>a", "a>b>c", "a<b"})
    EXPECT_NE(test::error_of([&] { slow_peers_of("a", bad, 5.0); }).find("FROM>TO or A<>B"), std::string::npos)
        << bad;
  // The link to a slow peer has its rate; to any other, the node's own.
  LinkEmulation e;
  e.rate_bytes_per_s = 25e6;
  e.peer_rate_bytes_per_s = {{"node-1", 1.25e6}};
  EXPECT_EQ(e.toward("node-1").rate_bytes_per_s, 1.25e6);
  EXPECT_EQ(e.toward("node-2").rate_bytes_per_s, 25e6);
  EXPECT_TRUE(e.toward("node-2").peer_rate_bytes_per_s.empty());
  EXPECT_EQ(e.describe(), "200 Mbit/s, 0 ms +- 0 ms one way; 10 Mbit/s to node-1");
  LinkEmulation only_slow;
  only_slow.peer_rate_bytes_per_s = {{"node-1", 1.25e6}};
  EXPECT_TRUE(only_slow.on());
  EXPECT_FALSE(only_slow.toward("node-2").on());
}

}  // namespace
}  // namespace intellect
