// A node's connection to the coordinator (dist/coordinator_client.h) against
// a scripted coordinator: a Transport on loopback that answers the join and
// then sends exactly the messages a test lays down, in order.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "dist/auth.h"
#include "dist/control.h"
#include "dist/coordinator_client.h"
#include "dist/transport.h"
#include "util/error.h"

using namespace intellect;
using namespace std::chrono_literals;

namespace {

RunSecret run_secret() { return RunSecret(std::vector<uint8_t>(32, 0x3c)); }

TransportOptions transport_options() {
  TransportOptions o;
  o.credentials = run_secret();
  o.log = [](const std::string&) {};
  return o;
}

control::RingMember member(uint64_t id, const std::string& address) {
  control::RingMember m;
  m.node_id = id;
  m.address = address;
  m.norm = -1.0f;
  return m;
}

// Accepts one node, welcomes it as node 7, and sends what the test asks.
class ScriptedCoordinator {
 public:
  ScriptedCoordinator() : transport_(transport_options()) {
    port_ = transport_.listen("127.0.0.1", 0);
    accept_ = std::thread([this] { welcome_one(); });
  }
  ~ScriptedCoordinator() {
    if (accept_.joinable()) accept_.join();
  }
  uint16_t port() const { return port_; }
  void joined() { accept_.join(); }
  void send(const control::Message& m) {
    Frame f;
    f.type = FrameType::control;
    f.payload = control::encode(m);
    transport_.send(conn_, std::move(f), deadline_in(5s));
  }

 private:
  void welcome_one() {
    const Deadline deadline = deadline_in(10s);
    while (!conn_) {
      std::optional<TransportEvent> ev = transport_.next_event(deadline);
      if (!ev) return;
      if (ev->kind == TransportEvent::Kind::authenticated && ev->inbound) conn_ = ev->conn;
    }
    std::optional<Message> join = transport_.recv(conn_, deadline);
    if (!join) return;
    control::Welcome w;
    w.node_id = 7;
    w.outer_step = 1;
    send(w);
  }

  Transport transport_;
  uint16_t port_ = 0;
  ConnId conn_ = 0;
  std::thread accept_;
};

struct Node {
  explicit Node(uint16_t coordinator_port)
      : transport(transport_options()),
        client(transport,
               CoordinatorClientOptions{"127.0.0.1:" + std::to_string(coordinator_port), "node-7", "127.0.0.1:1", "", "",
                                        10s, 10s, 10s, [](const std::string&) {}},
               cancel, 1) {}
  // Polls until a message other than a Rewound arrives (Rewound messages are
  // only noted by poll, as the ring's watcher reads them mid-round).
  control::Message poll_until_not_rewound() {
    const Deadline deadline = deadline_in(10s);
    while (MeshClock::now() < deadline) {
      if (std::optional<control::Message> m = client.poll())
        if (!std::holds_alternative<control::Rewound>(*m)) return *m;
      std::this_thread::sleep_for(5ms);
    }
    fail("no message before the deadline");
  }
  std::atomic<bool> cancel{false};
  Transport transport;
  CoordinatorClient client;
};

control::RingAnnounce ring_of_step(int64_t outer_step, uint64_t round) {
  control::RingAnnounce a;
  a.outer_step = outer_step;
  a.round = round;
  a.members = {member(7, "127.0.0.1:1"), member(8, "127.0.0.1:2")};
  return a;
}

// The CI failure of 2026-12-03: a rewind to outer step 1, then the ring of
// outer step 2 that the coordinator formed after it, both read by the ring's
// watcher mid-round. The round of that ring completes and is committed; the
// rewind must not come back afterwards as if it had abandoned the round.
TEST(CoordinatorClient, ARewindFollowedByARingOfTheNextStepIsAnsweredAndNotReportedLater) {
  ScriptedCoordinator coordinator;
  Node node(coordinator.port());
  coordinator.joined();
  coordinator.send(control::Rewound{1, 1});
  coordinator.send(ring_of_step(2, 3));
  coordinator.send(control::RoundCommit{2, 3});
  const control::Message ring = node.poll_until_not_rewound();
  ASSERT_TRUE(std::holds_alternative<control::RingAnnounce>(ring)) << control::name(ring);
  std::variant<control::Message, RewoundTo> heard = node.client.next(deadline_in(5s));
  ASSERT_TRUE(std::holds_alternative<control::Message>(heard))
      << "the rewind the ring answered was reported again, after the ring: the node would drop a committed round";
  EXPECT_TRUE(std::holds_alternative<control::RoundCommit>(std::get<control::Message>(heard)));
  EXPECT_EQ(node.client.rewinds(), 1u);
}

// A rewind that comes after the ring is about that ring: it stays reported.
TEST(CoordinatorClient, ARewindAfterARingIsReported) {
  ScriptedCoordinator coordinator;
  Node node(coordinator.port());
  coordinator.joined();
  coordinator.send(ring_of_step(2, 3));
  coordinator.send(control::Rewound{1, 1});
  const control::Message ring = node.poll_until_not_rewound();
  ASSERT_TRUE(std::holds_alternative<control::RingAnnounce>(ring));
  std::variant<control::Message, RewoundTo> heard = node.client.next(deadline_in(5s));
  ASSERT_TRUE(std::holds_alternative<RewoundTo>(heard));
  EXPECT_EQ(std::get<RewoundTo>(heard).outer_step, 1);
}

// A ring this node is not in, or of another step than the one after the
// rewind, does not answer it.
TEST(CoordinatorClient, ARingWithoutThisNodeOrOfAnotherStepLeavesTheRewindReported) {
  ScriptedCoordinator coordinator;
  Node node(coordinator.port());
  coordinator.joined();
  control::RingAnnounce others = ring_of_step(2, 3);
  others.members.erase(others.members.begin());
  coordinator.send(control::Rewound{1, 1});
  coordinator.send(others);
  coordinator.send(ring_of_step(3, 4));
  ASSERT_TRUE(std::holds_alternative<control::RingAnnounce>(node.poll_until_not_rewound()));
  ASSERT_TRUE(std::holds_alternative<control::RingAnnounce>(node.poll_until_not_rewound()));
  std::variant<control::Message, RewoundTo> heard = node.client.next(deadline_in(5s));
  ASSERT_TRUE(std::holds_alternative<RewoundTo>(heard));
  EXPECT_EQ(std::get<RewoundTo>(heard).outer_step, 1);
}

}  // namespace
