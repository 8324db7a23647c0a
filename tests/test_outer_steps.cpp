// The coordinator's outer-step phases (outer_steps.h) with a fake clock:
// a failed round is re-formed once, a moment after its first report, stale
// and repeated reports change nothing, retries are counted up to the limit,
// a done or rewound step is forgotten, and a round is committed only once
// every member still in the run completed it and none failed it.
#include <gtest/gtest.h>

#include <set>

#include "dist/outer_steps.h"

namespace intellect {
namespace {

using std::chrono::milliseconds;

MembershipTime at(int64_t ms) { return MembershipTime{} + milliseconds(ms); }
Ring ring(int64_t step, std::vector<uint64_t> nodes) { return Ring{step, 1, std::move(nodes)}; }

TEST(OuterSteps, AFailedRoundIsReformedOnceAfterTheDelay) {
  OuterSteps s(3, milliseconds(200));
  EXPECT_FALSE(s.active(5));
  EXPECT_EQ(s.failed(5, 1, at(0)), OuterSteps::Failure::no_ring) << "no ring announced for step 5";
  s.announced(ring(5, {1, 2, 3}), 10);
  ASSERT_TRUE(s.active(5));
  EXPECT_EQ(s.find(5)->phase, StepPhase::averaging);
  EXPECT_EQ(s.failed(5, 9, at(0)), OuterSteps::Failure::stale) << "an older round";
  EXPECT_EQ(s.failed(5, 11, at(0)), OuterSteps::Failure::stale) << "a round never announced";
  EXPECT_EQ(s.find(5)->phase, StepPhase::averaging);
  EXPECT_EQ(s.failed(5, 10, at(1000)), OuterSteps::Failure::scheduled);
  EXPECT_EQ(s.find(5)->phase, StepPhase::reform_pending);
  EXPECT_TRUE(s.active(5)) << "still the step's ring until it is re-formed";
  EXPECT_EQ(s.failed(5, 10, at(1100)), OuterSteps::Failure::repeated) << "another member's report of the same round";
  EXPECT_TRUE(s.take_due(at(1199)).empty()) << "due 200 ms after the first report, not the last";
  const std::vector<OuterSteps::Due> due = s.take_due(at(1200));
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].step, 5);
  EXPECT_FALSE(due[0].give_up);
  EXPECT_EQ(due[0].ring.nodes, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(s.find(5)->retries, 1);
  EXPECT_EQ(s.find(5)->phase, StepPhase::averaging);
  EXPECT_TRUE(s.take_due(at(5000)).empty()) << "taken once";
  s.announced(ring(5, {1, 3}), 12);
  EXPECT_EQ(s.find(5)->round, 12u);
  EXPECT_EQ(s.find(5)->retries, 1) << "a re-formed ring keeps the step's retries";
  EXPECT_EQ(s.failed(5, 10, at(5000)), OuterSteps::Failure::stale) << "the failed round was replaced";
}

TEST(OuterSteps, AStepIsGivenUpPastItsRetriesAndCanBeAnnouncedAgain) {
  OuterSteps s(1, milliseconds(0));
  s.announced(ring(2, {1, 2}), 1);
  ASSERT_EQ(s.failed(2, 1, at(0)), OuterSteps::Failure::scheduled);
  ASSERT_EQ(s.take_due(at(0)).size(), 1u);  // retry 1 of 1
  s.announced(ring(2, {1, 2}), 2);
  ASSERT_EQ(s.failed(2, 2, at(1)), OuterSteps::Failure::scheduled);
  const std::vector<OuterSteps::Due> due = s.take_due(at(1));
  ASSERT_EQ(due.size(), 1u);
  EXPECT_TRUE(due[0].give_up);
  EXPECT_FALSE(s.active(2));
  ASSERT_NE(s.find(2), nullptr);
  EXPECT_EQ(s.find(2)->phase, StepPhase::given_up);
  EXPECT_EQ(s.failed(2, 2, at(2)), OuterSteps::Failure::no_ring) << "a given-up step takes no more reports";
  // Formed again later (nodes ready for it once more): its retries are spent.
  s.announced(ring(2, {1}), 3);
  EXPECT_TRUE(s.active(2));
  ASSERT_EQ(s.failed(2, 3, at(3)), OuterSteps::Failure::scheduled);
  ASSERT_EQ(s.take_due(at(3)).size(), 1u);
  EXPECT_EQ(s.find(2)->phase, StepPhase::given_up);
}

TEST(OuterSteps, DoneAndRewoundStepsAreForgotten) {
  OuterSteps s(3, milliseconds(200));
  for (int64_t step = 1; step <= 4; ++step) s.announced(ring(step, {1, 2}), static_cast<uint64_t>(step));
  ASSERT_EQ(s.failed(3, 3, at(0)), OuterSteps::Failure::scheduled);
  s.done(1);
  EXPECT_EQ(s.find(1), nullptr);
  EXPECT_EQ(s.failed(1, 1, at(0)), OuterSteps::Failure::no_ring);
  s.rewind(2);  // the run goes on from outer step 2: 3 and 4 are lost
  EXPECT_TRUE(s.active(2));
  EXPECT_FALSE(s.active(3));
  EXPECT_FALSE(s.active(4));
  EXPECT_TRUE(s.take_due(at(1000)).empty()) << "a rewound step's pending re-form is dropped with it";
  EXPECT_STREQ(step_phase_name(StepPhase::reform_pending), "re-form pending");
}

TEST(OuterSteps, ARoundIsCommittedOnceEveryMemberStillInTheRunCompletedIt) {
  OuterSteps s(3, milliseconds(200));
  std::set<uint64_t> gone;
  auto in_run = [&](uint64_t n) { return !gone.count(n); };
  EXPECT_EQ(s.completed(5, 10, 1), OuterSteps::Completion::no_ring);
  s.announced(ring(5, {1, 2, 3}), 10);
  EXPECT_EQ(s.completed(5, 9, 1), OuterSteps::Completion::stale) << "an older round";
  EXPECT_EQ(s.completed(5, 10, 4), OuterSteps::Completion::stale) << "not a member of the round";
  EXPECT_EQ(s.completed(5, 10, 1), OuterSteps::Completion::recorded);
  EXPECT_EQ(s.completed(5, 10, 2), OuterSteps::Completion::recorded);
  EXPECT_TRUE(s.take_committed(in_run).empty()) << "node 3 may still fail the round";
  EXPECT_EQ(s.find(5)->phase, StepPhase::averaging);
  // Node 3 dies without a word: the others hold the same result.
  gone.insert(3);
  const std::vector<OuterSteps::Commit> c = s.take_committed(in_run);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].step, 5);
  EXPECT_EQ(c[0].round, 10u);
  EXPECT_EQ(c[0].ring.nodes, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(s.find(5)->phase, StepPhase::committed);
  EXPECT_TRUE(s.active(5)) << "its hashes are still to come";
  EXPECT_TRUE(s.take_committed(in_run).empty()) << "committed once";
  EXPECT_EQ(s.completed(5, 10, 1), OuterSteps::Completion::committed) << "said again: the commit is sent again";
  EXPECT_EQ(s.failed(5, 10, at(0)), OuterSteps::Failure::committed) << "too late to fail it";
  EXPECT_EQ(s.find(5)->phase, StepPhase::committed);
  EXPECT_TRUE(s.take_due(at(1000)).empty());
  s.done(5);
  EXPECT_EQ(s.completed(5, 10, 1), OuterSteps::Completion::no_ring);
  EXPECT_STREQ(step_phase_name(StepPhase::committed), "committed");
}

TEST(OuterSteps, ARoundAMemberFailedIsNeverCommittedEvenIfTheOthersCompletedIt) {
  OuterSteps s(3, milliseconds(200));
  auto everyone = [](uint64_t) { return true; };
  s.announced(ring(7, {1, 2, 3}), 20);
  EXPECT_EQ(s.completed(7, 20, 1), OuterSteps::Completion::recorded);
  EXPECT_EQ(s.completed(7, 20, 2), OuterSteps::Completion::recorded);
  ASSERT_EQ(s.failed(7, 20, at(0)), OuterSteps::Failure::scheduled);  // node 3 failed it
  EXPECT_TRUE(s.take_committed([](uint64_t n) { return n != 3; }).empty())
      << "node 3 failed it and is gone since: the round is still abandoned";
  EXPECT_EQ(s.completed(7, 20, 1), OuterSteps::Completion::stale) << "completed after the failure: redone";
  ASSERT_EQ(s.take_due(at(200)).size(), 1u);
  s.announced(ring(7, {1, 2}), 21);
  EXPECT_TRUE(s.find(7)->completed.empty()) << "the re-formed round starts with nobody done";
  EXPECT_EQ(s.completed(7, 20, 2), OuterSteps::Completion::stale) << "the abandoned round";
  EXPECT_EQ(s.completed(7, 21, 1), OuterSteps::Completion::recorded);
  EXPECT_TRUE(s.take_committed(everyone).empty());
  EXPECT_EQ(s.completed(7, 21, 2), OuterSteps::Completion::recorded);
  ASSERT_EQ(s.take_committed(everyone).size(), 1u);
  EXPECT_EQ(s.find(7)->round, 21u);
  // A ring of one never reports completion (nothing to agree on): never committed by this rule.
  s.announced(ring(8, {1}), 22);
  EXPECT_TRUE(s.take_committed(everyone).empty());
}

}  // namespace
}  // namespace intellect
