// The coordinator's membership rules with a fake clock: joins and partition
// hand-over, heartbeats and eviction, ring forming, re-forming after a
// failure, hash agreement, and the state a restarted coordinator reloads.
#include "dist/membership.h"

#include <algorithm>

#include "test_util.h"
#include "util/error.h"

namespace intellect {
namespace {

using std::chrono::milliseconds;

struct FakeClock {
  MembershipTime t{};
  MembershipTime operator()(int64_t ms) { return t + milliseconds(ms); }
};

TEST(Membership, JoinsGetFreshPartitionsAndLeaversHandTheirsOver) {
  Membership m;
  FakeClock c;
  const Registration a = m.join("a", "127.0.0.1:1", c(0)), b = m.join("b", "127.0.0.1:2", c(0)),
                     d = m.join("d", "127.0.0.1:3", c(0));
  EXPECT_EQ(a.partition, 0u);
  EXPECT_EQ(b.partition, 1u);
  EXPECT_EQ(d.partition, 2u);
  EXPECT_LT(a.epoch, d.epoch);
  m.leave(b.id);
  const Registration e = m.join("e", "127.0.0.1:4", c(10));
  EXPECT_EQ(e.partition, 1u) << "a joiner takes over the partition of the node that left";
  EXPECT_EQ(m.join("f", "127.0.0.1:5", c(10)).partition, 3u);
  EXPECT_EQ(m.size(), 4u);
}

TEST(Membership, SilentNodesAreEvictedAfterTheTimeout) {
  Membership m(MembershipOptions{milliseconds(6000), milliseconds(30000)});
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0)), b = m.join("b", "x:2", c(0));
  m.heartbeat(a.id, c(4000));
  EXPECT_TRUE(m.evict_silent(c(6000)).empty());  // exactly at the timeout: still in
  const auto gone = m.evict_silent(c(6001));
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0], b.id);
  EXPECT_FALSE(m.contains(b.id));
  std::string e = test::error_of([&] { m.heartbeat(b.id, c(6002)); });
  EXPECT_NE(e.find("must join again"), std::string::npos) << e;
  EXPECT_EQ(m.evict_silent(c(10001)), std::vector<uint64_t>{a.id});
}

TEST(Membership, RingFormsWhenAllAreReadyOrAfterTheReadyTimeout) {
  Membership m(MembershipOptions{milliseconds(60000), milliseconds(1000)});
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0)), b = m.join("b", "x:2", c(0)), d = m.join("d", "x:3", c(0));
  EXPECT_FALSE(m.try_form_ring(1, c(0)));
  m.ready(b.id, 1, c(10));
  m.ready(a.id, 1, c(20));
  EXPECT_FALSE(m.try_form_ring(1, c(500))) << "d still has time";
  m.ready(d.id, 1, c(600));
  auto ring = m.try_form_ring(1, c(600));
  ASSERT_TRUE(ring);
  EXPECT_EQ(ring->nodes, (std::vector<uint64_t>{a.id, b.id, d.id}));
  // Step 2: d is late, the ring forms without it after the timeout.
  m.ready(a.id, 2, c(1000));
  m.ready(b.id, 2, c(1000));
  EXPECT_FALSE(m.try_form_ring(2, c(1999)));
  ring = m.try_form_ring(2, c(2001));
  ASSERT_TRUE(ring);
  EXPECT_EQ(ring->nodes, (std::vector<uint64_t>{a.id, b.id}));
  EXPECT_FALSE(m.try_form_ring(2, c(2002))) << "a step's ring forms once";
  // A node joining now is not waited for while it fetches the state; once it
  // holds the state step 3 starts from (step 2) it is, like any peer.
  const auto j = m.join("j", "x:4", c(2100));
  EXPECT_FALSE(m.node(j.id).synced);
  m.note_held(j.id, 0);  // its own start: fetching
  m.ready(a.id, 3, c(3000));
  m.ready(b.id, 3, c(3000));
  m.ready(d.id, 3, c(3000));
  ring = m.try_form_ring(3, c(3000));
  ASSERT_TRUE(ring) << "nobody waits for a joiner that is still fetching";
  EXPECT_EQ(ring->nodes.size(), 3u);
  m.note_held(j.id, 3);  // caught up with step 3
  for (auto id : {a.id, b.id, d.id}) m.ready(id, 4, c(4000));
  EXPECT_FALSE(m.try_form_ring(4, c(4500))) << "a caught-up joiner is waited for";
  m.ready(j.id, 4, c(4600));
  ring = m.try_form_ring(4, c(4600));
  ASSERT_TRUE(ring);
  EXPECT_EQ(ring->nodes.size(), 4u);
  EXPECT_TRUE(m.node(j.id).synced);
}

// The eighth session's join on the H200: rounds of 0.84 s of compute and a
// 277 MB round that takes 2.2 s to download. A joiner that catches up one
// round at a time holds s - 2 when the others are ready for s; not waited
// for, it was late at every step to the end of the run. It is waited for
// once; a joiner that misses that chance is not waited for again while it
// is behind (the ring would pay the ready timeout every step).
TEST(Membership, AJoinerOneRoundBehindIsWaitedForOnce) {
  MembershipOptions o;
  o.ready_timeout = std::chrono::milliseconds(1000);
  Membership m(o);
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0));
  const auto b = m.join("b", "x:2", c(0));
  int64_t t = 0;
  auto step_without_waiting = [&](int64_t s) {
    t += 100;
    for (auto id : {a.id, b.id}) m.ready(id, s, c(t));
    return m.try_form_ring(s, c(t));
  };
  for (int64_t s = 1; s <= 3; ++s) ASSERT_TRUE(step_without_waiting(s));
  const auto j = m.join("j", "x:3", c(t));
  m.note_held(j.id, 0);  // fetching the state (a joiner holds the initialisation meanwhile)
  ASSERT_TRUE(step_without_waiting(4)) << "fetching the snapshot: not waited for";
  m.note_held(j.id, 2);  // caught up to 2, fetches round 3
  ASSERT_TRUE(step_without_waiting(5)) << "two rounds behind: not waited for";
  m.note_held(j.id, 4);  // caught up to 4, fetches round 5
  t += 100;
  for (auto id : {a.id, b.id}) m.ready(id, 6, c(t));
  EXPECT_FALSE(m.try_form_ring(6, c(t + 200))) << "one round behind: waited for";
  m.note_held(j.id, 5);
  m.ready(j.id, 6, c(t + 300));
  auto ring = m.try_form_ring(6, c(t + 300));
  ASSERT_TRUE(ring);
  EXPECT_EQ(ring->nodes.size(), 3u);
  EXPECT_TRUE(m.node(j.id).synced);

  // A second joiner that misses its chance is not waited for again while it is behind.
  const auto k = m.join("k", "x:4", c(t + 400));
  m.note_held(k.id, 5);  // caught up to 5, fetches round 6
  t += 1000;
  for (auto id : {a.id, b.id, j.id}) m.ready(id, 7, c(t));
  EXPECT_FALSE(m.try_form_ring(7, c(t + 900)));
  ring = m.try_form_ring(7, c(t + 1001));
  ASSERT_TRUE(ring) << "the chance ends with the ready timeout";
  EXPECT_EQ(ring->nodes.size(), 3u);
  m.note_held(k.id, 6);  // one behind again, at step 8
  t += 2000;
  for (auto id : {a.id, b.id, j.id}) m.ready(id, 8, c(t));
  ring = m.try_form_ring(8, c(t));
  ASSERT_TRUE(ring) << "its chance is used: the ring does not wait again";
  m.note_held(k.id, 8);  // holds what step 9 starts from: waited for as before
  t += 100;
  for (auto id : {a.id, b.id, j.id}) m.ready(id, 9, c(t));
  EXPECT_FALSE(m.try_form_ring(9, c(t)));
}

TEST(Membership, FailedRoundReformsWithoutTheLostNode) {
  Membership m;
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0)), b = m.join("b", "x:2", c(0)), d = m.join("d", "x:3", c(0));
  for (auto id : {a.id, b.id, d.id}) m.ready(id, 5, c(1));
  const Ring ring = *m.try_form_ring(5, c(1));
  m.leave(b.id);  // b died mid-round
  const Ring again = m.reform_ring(ring, {b.id});
  EXPECT_EQ(again.outer_step, 5);
  EXPECT_EQ(again.nodes, (std::vector<uint64_t>{a.id, d.id}));
  EXPECT_GT(again.epoch, ring.epoch);
}

TEST(Membership, HashesMustAgree) {
  Membership m;
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0)), b = m.join("b", "x:2", c(0));
  m.ready(a.id, 1, c(1));
  m.ready(b.id, 1, c(1));
  const Ring ring = *m.try_form_ring(1, c(1));
  HashCheck h = m.report_hash(ring, a.id, 0xabc);
  EXPECT_FALSE(h.complete);
  h = m.report_hash(ring, b.id, 0xabc);
  EXPECT_TRUE(h.complete);
  EXPECT_TRUE(h.agree);
  m.ready(a.id, 2, c(2));
  m.ready(b.id, 2, c(2));
  const Ring r2 = *m.try_form_ring(2, c(2));
  m.report_hash(r2, a.id, 1);
  h = m.report_hash(r2, b.id, 2);
  EXPECT_TRUE(h.complete);
  EXPECT_FALSE(h.agree);
  EXPECT_EQ(h.hashes.at(b.id), 2u);
  EXPECT_THROW(m.report_hash(r2, 999, 1), Error);
}

TEST(Membership, StateSurvivesARestart) {
  Membership m;
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0)), b = m.join("b", "x:2", c(0));
  m.join("d", "x:3", c(0));
  m.leave(b.id);
  m.ready(a.id, 7, c(5));
  const nlohmann::json saved = m.to_json();
  Membership r = Membership::from_json(saved, {}, c(100));
  EXPECT_EQ(r.size(), 2u);
  EXPECT_GT(r.epoch(), m.epoch());
  EXPECT_EQ(r.node(a.id).ready_for, std::nullopt) << "readiness is said again after a reconnect, not restored";
  EXPECT_EQ(r.join("e", "x:4", c(101)).partition, 1u) << "the freed partition is still free";
  EXPECT_GT(r.join("f", "x:5", c(101)).id, a.id);
  nlohmann::json bad = saved;
  bad["nodes"][0]["partition"] = 99;
  EXPECT_THROW(Membership::from_json(bad, {}, c(0)), Error);
  EXPECT_THROW(Membership::from_json(nlohmann::json{{"epoch", 1}}, {}, c(0)), Error);
}

// A restart right after a ring was announced: whether it completed is not
// known. Its ring forms again only with every member ready (no timeout); a
// node ready for the next step proves it was done, and the nodes still
// waiting on it are told to catch up.
TEST(Membership, AfterARestartTheLastAnnouncedStepIsSettledByTheNodes) {
  Membership m;
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0)), b = m.join("b", "x:2", c(0));
  m.ready(a.id, 1, c(1));
  m.ready(b.id, 1, c(1));
  ASSERT_TRUE(m.try_form_ring(1, c(1)));
  m.ready(a.id, 2, c(2));
  m.ready(b.id, 2, c(2));
  ASSERT_TRUE(m.try_form_ring(2, c(2)));  // announced, then the coordinator dies
  Membership r = Membership::from_json(m.to_json(), {}, c(10));
  EXPECT_EQ(r.last_ring_step(), 1);
  r.ready(a.id, 2, c(11));  // a never got the ring of step 2
  EXPECT_FALSE(r.try_form_ring(2, c(11 + 60000))) << "no ring of one for a step that may be done";
  // b shows that step 2 was done: a is told to catch up.
  const auto behind = r.note_step_done(3);
  ASSERT_EQ(behind.size(), 1u);
  EXPECT_EQ(behind[0].first, a.id);
  EXPECT_EQ(behind[0].second, 2);
  EXPECT_EQ(r.last_ring_step(), 2);
  // Had everyone been waiting on it, the ring would form again.
  Membership r2 = Membership::from_json(m.to_json(), {}, c(10));
  r2.ready(a.id, 2, c(11));
  r2.ready(b.id, 2, c(11));
  EXPECT_TRUE(r2.try_form_ring(2, c(11)));
}

// Nodes resuming from their checkpoints into a coordinator that lost its
// state (a fresh one) join one by one. The first one's Ready puts the run at
// its step; a second one holding that same step is in step with it (it is
// waited for, and needs no download), while one holding an older step, or
// nothing, fetches the state. Once this coordinator has formed a ring, the
// run's position is its own: a joiner claiming that step fetches the state
// anyway, as its checkpoint may be of a history the run has left.
TEST(Membership, AFreshCoordinatorCountsAJoinerHoldingTheRunsStepAsInStep) {
  Membership m(MembershipOptions{milliseconds(6000), milliseconds(30000), 2});
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0), 2);
  EXPECT_TRUE(m.node(a.id).synced) << "the first node of a fresh coordinator";
  m.ready(a.id, 3, c(1));
  EXPECT_TRUE(m.note_step_done(3).empty());
  ASSERT_EQ(m.last_ring_step(), 2);
  const auto b = m.join("b", "x:2", c(2), 2);
  EXPECT_TRUE(m.node(b.id).synced) << "holds step 2, as the only other node said it does";
  EXPECT_FALSE(m.node(m.join("old", "x:3", c(2), 0).id).synced) << "holds an older step";
  EXPECT_FALSE(m.node(m.join("new", "x:4", c(2), -1).id).synced) << "holds nothing";
  // The ring of step 3 waits for b (synced), not for the two fetching.
  EXPECT_FALSE(m.try_form_ring(3, c(3)));
  m.ready(b.id, 3, c(4));
  const std::optional<Ring> r = m.try_form_ring(3, c(4));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->nodes, (std::vector<uint64_t>{a.id, b.id}));
  EXPECT_FALSE(m.node(m.join("late", "x:5", c(5), 3).id).synced)
      << "after a ring formed here, a claim of the run's step is not enough";
  // Restored from its state file, the coordinator knows the run's position too.
  Membership restored = Membership::from_json(m.to_json(), {}, c(10));
  EXPECT_FALSE(restored.node(restored.join("back", "x:6", c(11), 3).id).synced);
}

}  // namespace
}  // namespace intellect

namespace intellect {
namespace {

// What each node holds decides where the run goes back to when every holder
// of its newest step is gone: held steps only go up (a restored member's is
// unknown until it says), and a rewind makes the holders of the step the
// donors and ring members, and everyone else a node that must catch up.
TEST(Membership, HeldStepsAndARewindToTheNewestOneHeld) {
  Membership m;
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0)), b = m.join("b", "x:2", c(0)), d = m.join("d", "x:3", c(0));
  for (const auto* n : {&a, &b, &d}) m.set_state_address(n->id, "x:9");
  EXPECT_EQ(m.newest_held(), (NewestHeld{HeldState{}, 0})) << "nobody holds anything yet";
  m.note_held(a.id, 4);
  m.note_held(b.id, 6);
  m.note_held(b.id, 5);  // never down
  m.note_held(d.id, -1);
  EXPECT_EQ(m.newest_held(), (NewestHeld{HeldState::of_wire(6), b.id}));
  for (const auto* n : {&a, &b, &d}) m.ready(n->id, 7, c(1));
  ASSERT_TRUE(m.try_form_ring(7, c(1)));
  m.ready(a.id, 8, c(2));
  m.ready(b.id, 7, c(2));  // late: a repeat of a step that is done
  m.leave(b.id);           // the holder of 6 leaves; a holds 4, d nothing
  m.rewind(4);
  EXPECT_EQ(m.last_ring_step(), 4);
  EXPECT_TRUE(m.node(a.id).synced);
  EXPECT_FALSE(m.node(d.id).synced) << "holds nothing: it takes step 4 from a donor";
  EXPECT_EQ(m.node(a.id).ready_for, std::nullopt) << "ready for step 8, which is not the next one any more";
  EXPECT_EQ(m.pick_donor({}), a.id);
  EXPECT_EQ(m.pick_donor({a.id}), std::nullopt);
  // The next step forms with the holders only; a joiner's ready is not waited for.
  m.ready(a.id, 5, c(3));
  const std::optional<Ring> r = m.try_form_ring(5, c(3));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->nodes, std::vector<uint64_t>{a.id});
  // Restored after a restart, nobody's held step is known until it says.
  Membership back = Membership::from_json(m.to_json(), {}, c(4));
  EXPECT_EQ(back.newest_held().held.kind, HeldState::Kind::unknown);
  EXPECT_TRUE(back.newest_held().held.at_least(1000)) << "an unknown holder may hold any step: no rewind past it";
  back.note_held(a.id, 5);
  back.note_held(d.id, -1);
  EXPECT_EQ(back.newest_held(), (NewestHeld{HeldState::of_wire(5), a.id}));
  EXPECT_EQ(back.node(d.id).held.kind, HeldState::Kind::nothing) << "said it holds nothing: no longer unknown";
}

}  // namespace
}  // namespace intellect

namespace intellect {
namespace {

// A joiner's further donors: synced nodes that serve state, lowest ids
// first, never one excluded (the joiner, its donor), at most `max`.
TEST(Membership, FurtherDonorsAreSyncedServingNodesUpToTheLimit) {
  Membership m;
  FakeClock c;
  const auto a = m.join("a", "x:1", c(0)), b = m.join("b", "x:2", c(0)), d = m.join("d", "x:3", c(0)),
             e = m.join("e", "x:4", c(0));
  for (const auto* n : {&a, &d, &e}) m.set_state_address(n->id, "x:9");  // b serves no state
  EXPECT_EQ(m.pick_donors({a.id}, 8), (std::vector<uint64_t>{d.id, e.id}));
  EXPECT_EQ(m.pick_donors({a.id}, 1), (std::vector<uint64_t>{d.id}));
  EXPECT_EQ(m.pick_donors({a.id, d.id, e.id}, 8), std::vector<uint64_t>{});
  for (const auto* n : {&a, &b, &d, &e}) m.ready(n->id, 1, c(1));
  ASSERT_TRUE(m.try_form_ring(1, c(1)));
  const auto j = m.join("joiner", "x:5", c(2));
  m.set_state_address(j.id, "x:9");
  EXPECT_FALSE(m.node(j.id).synced);
  EXPECT_EQ(m.pick_donors({a.id}, 8), (std::vector<uint64_t>{d.id, e.id})) << "a joiner is nobody's donor";
}

}  // namespace
}  // namespace intellect
