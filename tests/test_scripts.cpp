// The run scripts a device session depends on, run on the CPU here so that
// they cannot rot between the sessions that have the GPUs they are for.
// scripts/hetero_swarm.sh (issue 19: nodes of different GPU counts in one
// DiLoCo run) with CPU nodes (-g "0 0"): it starts a coordinator and the
// nodes, and reports every outer step's agreement and each node's compute
// utilization; it refuses a GPU count the machine does not have.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "test_util.h"

namespace intellect {
namespace {

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

const std::string kScript = std::string(INTELLECT_SOURCE_DIR) + "/scripts/hetero_swarm.sh";

TEST(Scripts, HeteroSwarmRunsCpuNodesAndReportsAgreementAndUtilization) {
  const std::string dir = ::testing::TempDir() + "/hetero_script";
  std::filesystem::remove_all(dir);
  const auto corpus = test::run_command(test::binary_dir() + "/make_corpus --out " + dir + "/corpus --docs 600 --val-docs 0");
  ASSERT_EQ(corpus.status, 0) << corpus.output;
  const auto r = test::run_command(
      "bash " + kScript + " -g '0 0' -b " + test::binary_dir() + " -o " + dir + "/run -r 200 -d 5" +
      " --set train.steps=30 --set diloco.inner_steps=10 --set diloco.rings=2 --set diloco.overlap=eager" +
      " --set train.threads=1 --set train.eval_every=0 --set 'data.train=" + dir + "/corpus/train_*.bin'" +
      " --set data.val= --set ckpt.save_final=false");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_CONTAINS(r.output, "outer steps checked: 3; agreed: 3; diverged: 0");
  for (int s = 1; s <= 3; ++s) EXPECT_CONTAINS(r.output, "outer step " + std::to_string(s) + ": all 2 nodes agree");
  EXPECT_CONTAINS(r.output, "node-0 (CPU): compute utilization ");
  EXPECT_CONTAINS(r.output, "node-1 (CPU): compute utilization ");
  EXPECT_CONTAINS(r.output, "3 outer steps applied, ring sizes [2]");
}

TEST(Scripts, HeteroSwarmRefusesWhatItCannotRun) {
  const auto one = test::run_command("bash " + kScript + " -g 1");
  EXPECT_EQ(one.status, 2);
  EXPECT_CONTAINS(one.output, "a swarm needs two or more");
  const auto bad = test::run_command("bash " + kScript + " -g '1 x'");
  EXPECT_EQ(bad.status, 2);
  EXPECT_CONTAINS(bad.output, "'x' is not a GPU count");
  // More GPUs than any machine this test runs on shows.
  const auto many = test::run_command("bash " + kScript + " -g '512 512' -b " + test::binary_dir());
  EXPECT_EQ(many.status, 2);
  EXPECT_CONTAINS(many.output, "takes 1024 GPUs; this machine shows");
}

}  // namespace
}  // namespace intellect
