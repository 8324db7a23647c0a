// The run's status: the coordinator's bounded history (RunStatus), its JSON
// and Prometheus renderings, and the HTTP server that serves them, against
// hostile clients (oversized requests, a slowloris, a wrong token) while the
// coordinator keeps serving its nodes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "dist/coordinator.h"
#include "dist/mesh_node.h"
#include "status/run_status.h"
#include "status/status_render.h"
#include "status/status_routes.h"
#include "status/status_server.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

using std::chrono::milliseconds;

std::string temp_dir(const std::string& name) {
  const std::string d =
      (std::filesystem::temp_directory_path() / ("intellect_status_" + name + "_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(d);
  make_dirs(d);
  return d;
}

control::NodeStatus report(int64_t step, double loss, double toks) {
  control::NodeStatus s;
  s.inner_step = step;
  s.total_steps = 100;
  s.has_loss = true;
  s.loss = loss;
  s.tokens_per_s = toks;
  s.device = "cpu";
  s.wall_s = 10.0 * step;
  s.outer_blocked_s = 1.0 * step;
  s.eta_s = 100.0 - step;
  return s;
}

// --- a small HTTP client over a raw socket, every wait bounded -------------

int dial(uint16_t port, milliseconds timeout = milliseconds(5000)) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` and reads until the server closes (or the timeout).
std::string http_exchange(uint16_t port, const std::string& request) {
  const int fd = dial(port);
  if (fd < 0) return "";
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string get(uint16_t port, const std::string& path, const std::string& extra_headers = "") {
  return http_exchange(port, "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra_headers + "\r\n");
}

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.", 0) != 0 || response.size() < 12) return 0;
  return std::atoi(response.c_str() + 9);
}

std::string body_of(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

std::shared_ptr<RunStatus> three_node_run() {
  auto st = std::make_shared<RunStatus>("test run");
  st->node_joined(1, "alpha", "10.0.0.1:7000", 0);
  st->node_joined(2, "beta \"quoted\"\\", "10.0.0.2:7000", 0);
  st->node_joined(3, "gamma", "10.0.0.3:7000", 1);
  for (int64_t step = 1; step <= 4; ++step) {
    st->node_status(1, report(step, 4.0 - 0.1 * step, 1000));
    st->node_status(2, report(step, 3.0 - 0.1 * step, 3000));
  }
  st->ring_announced(1, 7, {1, 2}, false);
  control::NodeStatus with_outer = report(4, 3.5, 1000);
  with_outer.outer_step = 1;
  with_outer.allreduce_s = 0.5;
  with_outer.outer_bytes = 1000;
  st->node_status(1, with_outer);
  with_outer.allreduce_s = 0.8;
  st->node_status(2, with_outer);
  st->outer_done(1, "agreed");
  return st;
}

TEST(RunStatus, KeepsMembersReportsAndOuterSteps) {
  const auto st = three_node_run();
  const RunSnapshot s = st->snapshot();
  ASSERT_EQ(s.nodes.size(), 3u);
  EXPECT_EQ(s.nodes[2].state, "fetching state");  // joined with a donor, nothing reported yet
  EXPECT_EQ(s.nodes[0].state, "training");       // back from its ring
  ASSERT_EQ(s.outer.size(), 1u);
  EXPECT_EQ(s.outer[0].agreement, "agreed");
  EXPECT_DOUBLE_EQ(s.outer[0].allreduce_s, 0.8);  // the slowest member's
  EXPECT_EQ(s.outer[0].bytes, 2000u);
  EXPECT_EQ(s.agreed, 1);
  const RunSummary r = summarize(s);
  EXPECT_EQ(r.live, 3);
  EXPECT_DOUBLE_EQ(r.tokens_per_s, 2000.0);  // the newest reports: 1000 + 1000
  // The mean curve: at step 2 both nodes reported 3.8 and 2.8.
  bool found = false;
  for (const LossPoint& p : r.mean_loss)
    if (p.step == 2) {
      EXPECT_NEAR(p.loss, (3.8 + 2.8) / 2, 1e-12);
      found = true;
    }
  EXPECT_TRUE(found);
  EXPECT_NEAR(r.utilization, 1.0 - (4.0 + 4.0) / (40.0 + 40.0), 1e-12);

  st->node_status(3, report(5, 3.0, 500));
  EXPECT_EQ(st->snapshot().nodes[2].state, "training");
  st->node_gone(2, true, "silent");
  const RunSnapshot after = st->snapshot();
  EXPECT_EQ(after.evictions, 1);
  EXPECT_EQ(after.nodes.back().state, "evicted");  // gone nodes listed after the members
  EXPECT_EQ(summarize(after).live, 2);
}

TEST(RunStatus, HistoryIsBounded) {
  RunStatus st("bounded");
  st.node_joined(1, "a", "", 0);
  for (int64_t i = 1; i <= 5000; ++i) {
    st.node_status(1, report(i, 1.0, 1));
    st.ring_announced(i, static_cast<uint64_t>(i), {1}, false);
    st.outer_done(i, "agreed");
  }
  for (uint64_t id = 2; id < 500; ++id) {
    st.node_joined(id, "n", "", 0);
    st.node_gone(id, false, "bye");
  }
  const RunSnapshot s = st.snapshot();
  EXPECT_EQ(s.nodes[0].loss.size(), RunStatus::kMaxLossPoints);
  EXPECT_EQ(s.nodes[0].loss.back().step, 5000);
  EXPECT_EQ(s.outer.size(), RunStatus::kMaxOuterSteps);
  EXPECT_EQ(s.events.size(), RunStatus::kMaxEvents);
  EXPECT_EQ(s.nodes.size(), 1 + RunStatus::kMaxGoneNodes);
}

TEST(RunStatus, JoinFiguresArriveWithTheJoinersReports) {
  RunStatus st("join");
  st.node_joined(4, "late", "", 2);
  control::NodeStatus s = report(10, 2.0, 1);
  s.join_s = 12.5;
  s.join_bytes = 4096;
  st.node_status(4, s);
  const RunSnapshot snap = st.snapshot();
  ASSERT_EQ(snap.events.size(), 1u);
  EXPECT_EQ(snap.events[0].kind, "join");
  EXPECT_EQ(snap.events[0].donor, 2u);
  EXPECT_DOUBLE_EQ(snap.events[0].seconds, 12.5);
  EXPECT_EQ(snap.events[0].bytes, 4096u);
}

// --- Prometheus text format ------------------------------------------------

// The exposition format's grammar, line by line: every sample belongs to the
// family whose TYPE came last, names and labels are well-formed, values parse.
void check_exposition(const std::string& text) {
  const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+)");
  const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*")*\})? (\S+))");
  std::string family;
  std::set<std::string> seen;
  std::istringstream in(text);
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, help)) continue;
    if (std::regex_match(line, m, type)) {
      family = m[1];
      EXPECT_TRUE(seen.insert(family).second) << "family declared twice: " << family;
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, m, sample)) << "not a sample line: " << line;
    EXPECT_EQ(m[1].str(), family) << line;
    const std::string v = m[7];
    if (v != "NaN" && v != "+Inf" && v != "-Inf") {
      size_t used = 0;
      std::stod(v, &used);
      EXPECT_EQ(used, v.size()) << line;
    }
    ++samples;
  }
  EXPECT_GT(samples, 20);
}

TEST(StatusRender, MetricsAreValidExpositionFormat) {
  const std::string text = prometheus_text(three_node_run()->snapshot());
  check_exposition(text);
  EXPECT_NE(text.find("intellect_node_loss{node=\"1\",name=\"alpha\"} 3.5\n"), std::string::npos) << text;
  // A name with a quote and a backslash is escaped, not broken out of.
  EXPECT_NE(text.find("name=\"beta \\\"quoted\\\"\\\\\""), std::string::npos) << text;
  EXPECT_NE(text.find("intellect_outer_steps_agreed_total 1\n"), std::string::npos);
  EXPECT_NE(text.find("intellect_members{state=\"fetching state\"} 1\n"), std::string::npos);
}

TEST(StatusRender, MetricsPassPromtool) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "promtool (Debian package prometheus) is not installed; the parser test above checks the format";
  const std::string path = temp_dir("promtool") + "/metrics.txt";
  const std::string text = prometheus_text(three_node_run()->snapshot());
  write_file_atomic(path, text.data(), text.size());
  const std::string cmd = "promtool check metrics < " + path + " > " + path + ".out 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream f(path + ".out");
  const std::string out((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "") << "promtool's lint findings";
}

TEST(StatusRender, JsonCarriesWhatThePageShows) {
  const nlohmann::json j = status_json(three_node_run()->snapshot());
  EXPECT_EQ(j["nodes"].size(), 3u);
  EXPECT_EQ(j["outer_steps"][0]["agreement"], "agreed");
  EXPECT_EQ(j["outer_steps"][0]["ring"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(j["nodes"][0]["loss"].size(), 4u);
  EXPECT_EQ(j["run"]["eta"], "1m 36s");  // the slowest member's: node 3 has not reported, nodes 1 and 2 at step 4
  EXPECT_EQ(format_duration(3725), "1h 02m");
  EXPECT_EQ(format_duration(-1), "?");
}

// --- the HTTP server --------------------------------------------------------

StatusServerOptions server_options(const std::string& token_file = "") {
  StatusServerOptions o;
  o.listen = "0";
  o.token_file = token_file;
  o.request_deadline = milliseconds(1000);
  o.idle_timeout = std::chrono::seconds(2);
  return o;
}

TEST(StatusServer, ServesThePageTheJsonAndTheMetrics) {
  StatusServer server(server_options(), status_routes(three_node_run()));
  const std::string page = get(server.port(), "/");
  EXPECT_EQ(status_of(page), 200);
  EXPECT_NE(page.find("Content-Security-Policy: default-src 'none'"), std::string::npos);
  // Self-contained: nothing is loaded from elsewhere.
  EXPECT_EQ(body_of(page).find("src=\"http"), std::string::npos);
  EXPECT_EQ(body_of(page).find("href=\"http"), std::string::npos);
  EXPECT_NE(body_of(page).find("id=\"loss-chart\""), std::string::npos);
  const std::string api = get(server.port(), "/api/status");
  ASSERT_EQ(status_of(api), 200);
  EXPECT_EQ(nlohmann::json::parse(body_of(api))["nodes"].size(), 3u);
  const std::string metrics = get(server.port(), "/metrics");
  ASSERT_EQ(status_of(metrics), 200);
  check_exposition(body_of(metrics));
  EXPECT_EQ(status_of(get(server.port(), "/etc/passwd")), 404);
  EXPECT_EQ(status_of(http_exchange(server.port(), "POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                              "Connection: close\r\n\r\nabc")),
            405);
  // HTTP/1.1 without a Host header is malformed.
  EXPECT_EQ(status_of(http_exchange(server.port(), "GET / HTTP/1.1\r\nConnection: close\r\n\r\n")), 400);
  EXPECT_EQ(status_of(http_exchange(server.port(), "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n")) / 100, 4);
}

TEST(StatusServer, RefusesAnOversizedRequest) {
  StatusServer server(server_options(), status_routes(three_node_run()));
  const std::string huge = get(server.port(), "/", "X-Filler: " + std::string(64 * 1024, 'a') + "\r\n");
  EXPECT_EQ(status_of(huge) / 100, 4) << huge.substr(0, 200);
  const std::string long_url = get(server.port(), "/" + std::string(64 * 1024, 'b'));
  EXPECT_EQ(status_of(long_url) / 100, 4) << long_url.substr(0, 200);
  EXPECT_EQ(status_of(get(server.port(), "/metrics")), 200);  // and goes on serving
}

TEST(StatusServer, WantsTheTokenWhenGivenOne) {
  const std::string dir = temp_dir("status_token");
  const std::string token = "0123456789abcdef0123456789abcdef";
  write_file_atomic(dir + "/token", (token + "\n").data(), token.size() + 1);
  StatusServer server(server_options(dir + "/token"), status_routes(three_node_run()));
  EXPECT_EQ(status_of(get(server.port(), "/metrics")), 401);
  const std::string wrong = get(server.port(), "/metrics", "Authorization: Bearer 0123456789abcdef0123456789abcdeX\r\n");
  EXPECT_EQ(status_of(wrong), 401);
  EXPECT_NE(wrong.find("WWW-Authenticate: Bearer"), std::string::npos);
  EXPECT_EQ(body_of(wrong).find("intellect_"), std::string::npos);
  EXPECT_EQ(status_of(get(server.port(), "/metrics", "Authorization: Bearer " + token.substr(0, 8) + "\r\n")), 401);
  EXPECT_EQ(status_of(get(server.port(), "/metrics", "Authorization: Bearer " + token + "\r\n")), 200);
  EXPECT_EQ(status_of(get(server.port(), "/?token=" + token)), 200);
  EXPECT_EQ(status_of(get(server.port(), "/?token=nope")), 401);
  // A token too short to be one is refused at start, with what to do.
  write_file_atomic(dir + "/short", "abc\n", 4);
  const std::string err = test::error_of([&] { StatusServer s(server_options(dir + "/short"), status_routes(three_node_run())); });
  EXPECT_NE(err.find("at least 16"), std::string::npos) << err;
}

TEST(StatusServer, CutsOffASlowlorisAndServesOthersMeanwhile) {
  StatusServer server(server_options(), status_routes(three_node_run()));
  const int slow = dial(server.port());
  ASSERT_GE(slow, 0);
  const std::string request = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(200, 's') + "\r\n\r\n";
  const auto t0 = std::chrono::steady_clock::now();
  bool cut = false;
  // One byte every 100 ms: never idle, never done.
  for (size_t i = 0; i < request.size() && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(6); ++i) {
    if (::send(slow, request.data() + i, 1, MSG_NOSIGNAL) != 1) {
      cut = true;
      break;
    }
    if (i == 5) {
      EXPECT_EQ(status_of(get(server.port(), "/metrics")), 200);  // others are served meanwhile
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  if (!cut) {  // the send may still succeed into the socket buffer; the read end says it
    char c;
    cut = ::recv(slow, &c, 1, MSG_DONTWAIT) == 0;
  }
  ::close(slow);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(cut) << "the slow client still held its connection after " << took << " s";
  EXPECT_LT(took, 3.0);  // the deadline is 1 s, checked every 200 ms
  EXPECT_GE(server.connections_cut(), 1u);
}

TEST(StatusServer, BoundsConnectionsPerClient) {
  StatusServerOptions o = server_options();
  o.max_per_client = 4;
  StatusServer server(o, status_routes(three_node_run()));
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) held.push_back(dial(server.port()));
  std::this_thread::sleep_for(milliseconds(200));
  // The fifth from the same address is closed at once, unanswered.
  const std::string fifth = get(server.port(), "/metrics");
  EXPECT_EQ(status_of(fifth), 0) << fifth.substr(0, 100);
  for (int fd : held) ::close(fd);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(status_of(get(server.port(), "/metrics")), 200);
}

TEST(StatusServer, ListenSettingIsLoopbackUnlessAnAddressIsGiven) {
  EXPECT_EQ(parse_http_listen("8080", "k"), std::make_pair(std::string("127.0.0.1"), uint16_t{8080}));
  EXPECT_EQ(parse_http_listen("0.0.0.0:9", "k"), std::make_pair(std::string("0.0.0.0"), uint16_t{9}));
  EXPECT_NE(test::error_of([] { parse_http_listen("example.com:80", "mesh.status_listen"); }).find("mesh.status_listen"),
            std::string::npos);
  EXPECT_THROW(parse_http_listen("70000", "k"), Error);
  EXPECT_THROW(parse_http_listen("127.0.0.1:", "k"), Error);
}

// The coordinator serves the page from its own server thread: hostile
// clients against it do not stop it from serving its nodes, and the page
// shows what the nodes report with their heartbeats.
TEST(StatusServer, CoordinatorKeepsServingNodesMeanwhile) {
  const std::string dir = temp_dir("status_coord");
  const std::string token = "fedcba9876543210fedcba9876543210";
  write_file_atomic(dir + "/token", token.data(), token.size());
  CoordinatorOptions o;
  o.credentials = RunSecret(std::vector<uint8_t>(32, 7), "test secret");
  o.heartbeat_interval = milliseconds(100);
  o.membership.heartbeat_timeout = milliseconds(800);
  o.status_listen = "0";
  o.status_token_file = dir + "/token";
  o.log = [](const std::string&) {};
  Coordinator coordinator(o);
  std::atomic<bool> stop{false};
  std::thread loop([&] { coordinator.run(stop); });
  const uint16_t port = static_cast<uint16_t>(std::stoi(coordinator.status_url().substr(17)));
  {
    MeshNodeOptions n;
    n.coordinator = "127.0.0.1:" + std::to_string(coordinator.port());
    n.name = "watched";
    n.credentials = RunSecret(std::vector<uint8_t>(32, 7), "test secret");
    n.log = [](const std::string&) {};
    MeshNode node(n);
    node.set_status(report(42, 2.5, 1234));
    // Hostile clients for longer than the heartbeat timeout.
    std::vector<std::thread> attackers;
    std::atomic<int> refused{0};
    attackers.emplace_back([&] {
      const int fd = dial(port);
      const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
      for (size_t i = 0; i < req.size() && !stop.load(); ++i) {
        if (::send(fd, req.data() + i, 1, MSG_NOSIGNAL) != 1) break;
        std::this_thread::sleep_for(milliseconds(100));
      }
      ::close(fd);
    });
    attackers.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        if (status_of(get(port, "/metrics", "Authorization: Bearer wrong-token-wrong-token\r\n")) == 401) ++refused;
        if (status_of(get(port, "/", "X-Big: " + std::string(40000, 'x') + "\r\n")) / 100 == 4) ++refused;
        std::this_thread::sleep_for(milliseconds(50));
      }
    });
    for (std::thread& t : attackers) t.join();
    EXPECT_EQ(refused.load(), 40);
    const std::string api = get(port, "/api/status", "Authorization: Bearer " + token + "\r\n");
    ASSERT_EQ(status_of(api), 200) << api.substr(0, 300);
    const nlohmann::json j = nlohmann::json::parse(body_of(api));
    ASSERT_EQ(j["nodes"].size(), 1u);
    EXPECT_EQ(j["nodes"][0]["name"], "watched");
    EXPECT_EQ(j["nodes"][0]["state"], "training");  // never evicted while the attacks ran
    EXPECT_EQ(j["nodes"][0]["status"]["inner_step"], 42);
    EXPECT_EQ(j["run"]["evictions"], 0);
  }
  stop = true;
  loop.join();
}

}  // namespace
}  // namespace intellect
