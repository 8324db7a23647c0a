// The coordinator's rule for leaving a ready node out of a ring because of
// the norm it announced (dist/norm_outliers.h).
#include <gtest/gtest.h>

#include "dist/norm_outliers.h"

using namespace intellect;

namespace {

std::vector<uint64_t> left_out(const std::map<uint64_t, double>& norms, double reference, size_t members) {
  return judge_norms(norms, 5.0, reference, members).left_out;
}

TEST(NormOutliers, OfTwoTheLargerIsJudgedAgainstTheSmallerAndTheSmallerIsNeverLeftOut) {
  EXPECT_EQ(left_out({{1, 1.0}, {2, 100.0}}, 0.0, 2), std::vector<uint64_t>{2});
  EXPECT_TRUE(left_out({{1, 1.0}, {2, 4.9}}, 0.0, 2).empty());
  const NormJudgement j = judge_norms({{1, 1.0}, {2, 100.0}}, 5.0, 0.0, 2);
  ASSERT_EQ(j.why.count(2), 1u);
  EXPECT_NE(j.why.at(2).find("the median of the others"), std::string::npos) << j.why.at(2);
}

TEST(NormOutliers, AMajorityIsNeverLeftOut) {
  EXPECT_EQ(left_out({{1, 1.0}, {2, 1.1}, {3, 0.9}, {4, 50.0}}, 0.0, 4), std::vector<uint64_t>{4});
  EXPECT_TRUE(left_out({{1, 1.0}, {2, 50.0}, {3, 60.0}}, 0.0, 3).empty());
}

TEST(NormOutliers, ANodeAloneIsJudgedAgainstTheLastRingWhenOthersAreInTheRun) {
  EXPECT_EQ(left_out({{3, 53.0}}, 3.3, 3), std::vector<uint64_t>{3});
  EXPECT_TRUE(left_out({{3, 10.0}}, 3.3, 3).empty());
  EXPECT_TRUE(left_out({{3, 53.0}}, 0.0, 3).empty()) << "no reference known (a fresh run, or after a rewind)";
}

// The eighth session's join on the H200: the run's two nodes ended while a
// joiner downloaded, the run went back to outer step 0, and the joiner,
// alone, announced its first pseudo-gradient (norm 53) against the median of
// the old run's last ring (3.3): left out of every ring, with nobody to take
// the round from, it never got past outer step 1.
TEST(NormOutliers, TheRunsOnlyMemberIsNeverLeftOut) {
  EXPECT_TRUE(left_out({{3, 53.0}}, 3.3, 1).empty());
}

TEST(NormOutliers, FactorZeroLeavesNobodyOut) {
  EXPECT_TRUE(judge_norms({{1, 1.0}, {2, 1e9}}, 0.0, 0.0, 2).left_out.empty());
}

}  // namespace
