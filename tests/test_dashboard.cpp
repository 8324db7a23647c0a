// The run's dashboard in a real browser: a --local-nodes 3 swarm with
// mesh.status_listen on, its page loaded in headless Chromium (Debian's
// chromium), and the rendered DOM checked: three members, a loss chart with
// points, an outer step with agreement. A screenshot is left in the build
// directory (dashboard.png) for a person to look at. Skips, saying so, only
// where chromium is not installed.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace intellect {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// The swarm in its own process group, so that the test can end all of it.
struct SwarmProcess {
  pid_t pid = -1;
  ~SwarmProcess() {
    if (pid <= 0) return;
    ::kill(-pid, SIGTERM);  // the swarm passes it on: every node saves and stops
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
};

std::string curl_free_get(const std::string& url) {
  // chromium is the client under test; for polling, the test's own request
  // through bash's /dev/tcp keeps the dependencies to what CI installs.
  const std::regex r(R"(http://([0-9.]+):([0-9]+)/)");
  std::smatch m;
  if (!std::regex_match(url, m, r)) return "";
  const test::CommandResult c = test::run_command(
      "timeout 5 bash -c 'exec 3<>/dev/tcp/" + m[1].str() + "/" + m[2].str() +
      "; printf \"GET /api/status HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n\" >&3; cat <&3'");
  const size_t body = c.output.find("\r\n\r\n");
  return body == std::string::npos ? "" : c.output.substr(body + 4);
}

TEST(Dashboard, ChromiumRendersASwarmOfThree) {
  if (std::system("command -v chromium >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "chromium is not installed (Debian package chromium; scripts/setup.sh installs it): the "
                    "dashboard is not checked in a browser here";
  const std::string dir = ::testing::TempDir() + "/dashboard";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto corpus = test::run_command(test::binary_dir() + "/make_corpus --out " + dir + "/corpus --docs 300 --val-docs 20");
  ASSERT_EQ(corpus.status, 0) << corpus.output;

  SwarmProcess swarm;
  const std::string out = dir + "/swarm.out";
  swarm.pid = ::fork();
  ASSERT_GE(swarm.pid, 0);
  if (swarm.pid == 0) {
    ::setpgid(0, 0);
    std::vector<std::string> args = {test::binary_dir() + "/intellect_train", "--local-nodes", "3"};
    for (const std::string& s :
         {"train.out_dir=" + dir + "/run", std::string("train.steps=4000"), std::string("diloco.inner_steps=4"),
          std::string("train.threads=1"), std::string("model.dim=48"), std::string("model.ffn_dim=128"),
          std::string("model.head_dim=12"), std::string("model.n_layers=2"), std::string("train.eval_every=8"),
          std::string("train.eval_batches=1"), std::string("train.log_every=1000"),
          "data.train=" + dir + "/corpus/train_*.bin", "data.val=" + dir + "/corpus/val_*.bin",
          std::string("ckpt.save_final=false"), std::string("mesh.status_listen=0")})
      args.insert(args.end(), {"--set", s});
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    FILE* f = std::freopen(out.c_str(), "w", stdout);
    if (f) ::dup2(::fileno(stdout), 2);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  ::setpgid(swarm.pid, swarm.pid);

  // The URL it prints, then a run with every member reporting and an outer step agreed.
  std::string url;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  const std::regex printed(R"(dashboard of the swarm: (http://[0-9.]+:[0-9]+/))");
  while (url.empty() && std::chrono::steady_clock::now() < deadline) {
    std::smatch m;
    const std::string text = read_all(out);
    if (std::regex_search(text, m, printed)) url = m[1];
    else std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_FALSE(url.empty()) << "the swarm printed no dashboard URL:\n" << read_all(out);
  bool ready = false;
  while (!ready && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    try {
      const nlohmann::json j = nlohmann::json::parse(curl_free_get(url));
      int reporting = 0;
      for (const auto& n : j["nodes"]) reporting += n["loss"].size() >= 10 && n["val_loss"].size() >= 1;
      ready = reporting == 3 && j["run"]["agreed"].get<int>() >= 2;
    } catch (const std::exception&) {
    }
  }
  ASSERT_TRUE(ready) << "the swarm did not get to 3 reporting members and 2 agreed outer steps in time:\n"
                     << read_all(out);

  const std::string chromium = "timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage "
                               "--hide-scrollbars --user-data-dir=" + dir + "/profile --virtual-time-budget=8000 ";
  const test::CommandResult dom = test::run_command(chromium + "--dump-dom " + url + " 2>/dev/null");
  ASSERT_EQ(dom.status, 0) << dom.output.substr(0, 2000);
  const std::string& html = dom.output;
  EXPECT_NE(html.find("data-loaded=\"1\""), std::string::npos) << "the page's script never rendered the status";
  auto count = [&](const std::string& pattern) {
    const std::regex r(pattern);
    return std::distance(std::sregex_iterator(html.begin(), html.end(), r), std::sregex_iterator());
  };
  EXPECT_EQ(count(R"(<tr class="member")"), 3) << html.substr(0, 4000);
  EXPECT_EQ(count(R"re(class="member" data-state="(training|waiting for ring|in ring)")re"), 3);
  // A curve per node and the mean, each with points.
  std::smatch m;
  int curves = 0;
  const std::regex series(R"re(<polyline class="series" data-node="(\d+)" data-points="(\d+)")re");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), series); it != std::sregex_iterator(); ++it)
    curves += std::stoi((*it)[2]) >= 10;
  EXPECT_EQ(curves, 4) << "3 nodes' loss curves and their mean, each with at least 10 points";
  EXPECT_GE(count(R"(<tr class="outer" data-agreement="agreed")"), 2);
  EXPECT_EQ(count(R"(data-agreement="diverged")"), 0);
  EXPECT_GE(count(R"(<circle class="event")"), 3) << "three joins on the timeline";

  const std::string png = test::binary_dir() + "/dashboard.png";
  std::filesystem::remove(png);
  const test::CommandResult shot =
      test::run_command(chromium + "--window-size=1400,1150 --screenshot=" + png + " " + url + " 2>&1");
  ASSERT_EQ(shot.status, 0) << shot.output.substr(0, 2000);
  const std::string bytes = read_all(png);
  ASSERT_GT(bytes.size(), 20000u) << "the screenshot is missing or blank";
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  std::printf("dashboard screenshot: %s\n", png.c_str());
}

}  // namespace
}  // namespace intellect
