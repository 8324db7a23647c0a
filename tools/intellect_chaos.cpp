// intellect_chaos: a coordinator and N training nodes on loopback, with
// faults injected at random for a bounded time, then checks on what they
// left. Faults: a node killed (SIGKILL), a node stopped (SIGSTOP, continued
// a while later: past the heartbeat timeout it is evicted, exits 75 and is
// started again), a new node started (it joins mid-run and streams the state),
// and the coordinator killed and restarted on the same address.
//
//   intellect_chaos [--nodes 3] [--max-nodes 5] [--seconds 60] [--seed 1]
//                   [--out DIR] [--netns] [--lose-state] [--overlap none|eager|delayed] [--all-reduce ring|direct]
//                   [--byzantine scale|understate|accuse|alter] [--set k=v]...
//
// --byzantine: one more node attacks the run all along (faults spare it).
// `scale` sends its pseudo-gradient times 100 and says so: the coordinator
// must leave it out of every ring as a norm outlier (it catches up from
// donors). `understate` sends 100x but announces the honest-sized norm: its
// ring successor must catch it, and the coordinator must refuse it for the
// rest of the run. `accuse` sends honestly but accuses its ring predecessor
// in every ring, handing over that node's honest signed messages as
// evidence (mesh.attack_false_accusation): the run then uses node keys (a
// key per process, one allowlist file, a line added before each node
// starts), and the coordinator must refuse the accuser and nobody else.
// `alter`: node keys and diloco.compression sparse on every node; the
// attacker sends honestly but flips the sign of a kept value in every
// chunk of another node's contribution it forwards, signing it on as its
// sender (mesh.attack_alter_forwarded): its ring successor must catch it on
// the author's signature, and the coordinator must refuse it on its own.
// Checked besides the usual: the attacker was excluded.
//
// --overlap eager|delayed: every node runs with that diloco.overlap (each
// outer step's all-reduce on a thread of its own while the next inner steps
// run, applied one round late), so every fault also lands while a round is
// in flight in the background.
//
// --all-reduce direct: every node averages over the direct pattern
// (diloco.all_reduce, direct_allreduce.h), so a killed or stopped node
// fails every member's round at once, not just its neighbours'.
//
// --lose-state: a further fault kills every running node at the newest outer
// step at once while a node behind them lives on, so no live node holds the
// run's newest state and the coordinator must rewind the run to the newest
// step a live node holds (without it, faults spare the last such node).
// --netns (root, `ip netns`): every node gets its own network namespace on a
// bridge, so links can fail one by one. A further fault then partitions two
// live nodes from each other for 4-15 s while both still reach everyone
// else: each side's neighbour entry for the other points at a MAC nobody has,
// so packets vanish silently (no RST, no ICMP), as on a broken WAN path.
// (tc netem, for delay, jitter and loss, is not in this kernel.)
//
// Checks, each printed: every node that wrote outer step k wrote the same
// hash (joiners and late nodes included); no process the driver did not kill
// ended with an error; every process still running at the end stops on
// SIGTERM within 60 s (no hang); the loss fell; outer steps kept completing.
// Exit 0 when all hold. The summary (faults, joins, time to join, retries,
// outer steps) goes to stdout and <out>/chaos_summary.json.
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/identity.h"
#include "status/status_server.h"
#include "util/error.h"
#include "util/file.h"

namespace {

using namespace intellect;
using Clock = std::chrono::steady_clock;

struct Proc {
  std::string name;
  int index = 0;  // node-<index>
  pid_t pid = -1;
  bool alive = false, stopped = false, killed_by_us = false;
  bool byzantine = false;  // --byzantine's attacker: no fault touches it, and it is not restarted
  Clock::time_point cont_at{};  // when a stopped node is continued
};

// Runs `cmd` through the shell; fails naming it unless it exits 0.
void sh(const std::string& cmd) {
  const int rc = std::system((cmd + " 2>&1").c_str());
  if (rc != 0) fail("`", cmd, "` failed (", rc, "); --netns needs root and `ip netns`");
}

// Lines of a command's output.
std::vector<std::string> lines_of(const std::string& cmd) {
  std::vector<std::string> out;
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) {
    std::string l(buf);
    while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
    out.push_back(l);
  }
  ::pclose(p);
  return out;
}

// The bridge and one namespace per node; torn down when the driver ends.
// Names carry the driver's pid, so a lab left by a driver that was killed
// outright is recognised and removed by the next one.
class NetLab {
 public:
  NetLab() : tag_(std::to_string(::getpid())) {
    remove_stale();
    if (!lines_of("ip -o addr show to 10.231.0.1").empty())
      fail("10.231.0.1 is taken (another intellect_chaos --netns run is active?): run one at a time");
    bridge_ = "icb" + tag_;
    std::system(("ip link del " + bridge_ + " >/dev/null 2>&1").c_str());
    sh("ip link add " + bridge_ + " type bridge");
    up_ = true;
    // A fixed address: a bridge whose address was never set takes the
    // lowest of its ports' and changes it as nodes come and go, and every
    // node's ARP entry for the coordinator then points nowhere for seconds
    // (all nodes were evicted at once that way).
    sh("ip link set " + bridge_ + " address 02:00:0a:e7:00:01");
    sh("ip addr add 10.231.0.1/16 dev " + bridge_);
    sh("ip link set " + bridge_ + " up");
  }
  ~NetLab() {
    for (int n : nodes_) std::system(("ip netns del " + ns(n) + " >/dev/null 2>&1").c_str());
    if (up_) std::system(("ip link del " + bridge_ + " >/dev/null 2>&1").c_str());
  }
  static std::string host() { return "10.231.0.1"; }
  std::string ns(int n) const { return "ic" + tag_ + "-" + std::to_string(n); }
  static std::string ip(int n) { return str("10.231.", 1 + n / 200, ".", 10 + n % 200); }
  std::string dev(int n) const { return "in" + std::to_string(n); }  // inside its namespace
  void add(int n) {
    const std::string outer = "v" + tag_ + "-" + std::to_string(n);  // at most 15 characters (pids < 2^22)
    sh("ip netns add " + ns(n));
    nodes_.insert(n);
    sh("ip link add " + outer + " type veth peer name " + dev(n));
    sh("ip link set " + dev(n) + " netns " + ns(n));
    sh("ip link set " + outer + " master " + bridge_ + " up");
    sh("ip netns exec " + ns(n) + " ip addr add " + ip(n) + "/16 dev " + dev(n));
    sh("ip netns exec " + ns(n) + " ip link set " + dev(n) + " up");
    sh("ip netns exec " + ns(n) + " ip link set lo up");
  }
  void remove(int n) {
    if (!nodes_.erase(n)) return;
    std::system(("ip netns del " + ns(n) + " >/dev/null 2>&1").c_str());  // takes its veth pair along
  }
  bool has(int n) const { return nodes_.count(n) != 0; }
  static void remove_stale() {
    auto dead = [](const std::string& pid) {
      return !pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos &&
             ::kill(static_cast<pid_t>(std::stol(pid)), 0) != 0 && errno == ESRCH;
    };
    for (const std::string& l : lines_of("ip netns list")) {
      const std::string name = l.substr(0, l.find(' '));  // "ic<pid>-<n> (id: 3)"
      if (name.rfind("ic", 0) != 0 || name.find('-') == std::string::npos) continue;
      if (dead(name.substr(2, name.find('-') - 2))) std::system(("ip netns del " + name + " >/dev/null 2>&1").c_str());
    }
    for (const std::string& l : lines_of("ip -o link show type bridge")) {
      const size_t at = l.find(": icb");
      if (at == std::string::npos) continue;
      const std::string name = l.substr(at + 2, l.find(':', at + 2) - at - 2);
      if (dead(name.substr(3))) std::system(("ip link del " + name + " >/dev/null 2>&1").c_str());
    }
  }
  // Each side's neighbour entry for the other: a MAC no one has. Silent loss.
  void cut(int a, int b) {
    sh("ip netns exec " + ns(a) + " ip neigh replace " + ip(b) + " lladdr 02:00:00:00:00:01 dev " + dev(a) +
       " nud permanent");
    sh("ip netns exec " + ns(b) + " ip neigh replace " + ip(a) + " lladdr 02:00:00:00:00:01 dev " + dev(b) +
       " nud permanent");
  }
  void heal(int a, int b) {
    if (has(a)) std::system(("ip netns exec " + ns(a) + " ip neigh del " + ip(b) + " dev " + dev(a) + " >/dev/null 2>&1").c_str());
    if (has(b)) std::system(("ip netns exec " + ns(b) + " ip neigh del " + ip(a) + " dev " + dev(b) + " >/dev/null 2>&1").c_str());
  }

 private:
  std::string tag_, bridge_;
  bool up_ = false;
  std::set<int> nodes_;
};

// Starts args[0] with stdout and stderr appended to `log`, in network
// namespace `netns` when one is named.
volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

pid_t spawn(const std::vector<std::string>& args, const std::string& log, const std::string& netns = "") {
  std::fflush(stdout);  // or the child repeats what this process had buffered
  const std::string ns_path = netns.empty() ? "" : "/var/run/netns/" + netns;
  const pid_t pid = ::fork();
  if (pid < 0) fail("fork failed");
  if (pid == 0) {
    ::setpgid(0, 0);
    if (!ns_path.empty()) {
      const int fd = ::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) std::_Exit(126);
    }
    // If this driver dies, its run dies with it: no orphans writing into a
    // directory the next run reuses.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    FILE* f = std::freopen(log.c_str(), "a", stdout);
    if (f) ::dup2(::fileno(stdout), 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  return pid;
}

uint16_t free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    fail("could not find a free port");
  const uint16_t port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream f(path);
  for (std::string l; std::getline(f, l);) {
    try {
      out.push_back(nlohmann::json::parse(l));
    } catch (const nlohmann::json::exception&) {  // a line cut short by SIGKILL
    }
  }
  return out;
}

// The newest outer step each node's metrics show, read incrementally, as
// (rewinds of the run, outer step): after a rewind the run repeats steps, and
// the repeat is newer than what came before it.
using OuterMark = std::pair<int64_t, int64_t>;
class OuterProgress {
 public:
  OuterMark newest(const std::string& path) {
    Entry& e = seen_[path];
    std::ifstream f(path);
    if (!f) return e.newest;
    f.seekg(static_cast<std::streamoff>(e.offset));
    std::string l;
    while (std::getline(f, l)) {
      if (f.eof()) break;  // a line still being written: read it next time
      e.offset += l.size() + 1;
      const size_t at = l.find("\"outer_step\":");
      if (at == std::string::npos) continue;
      const size_t rw = l.find("\"rewinds\":");
      const OuterMark m{rw == std::string::npos ? 0 : std::atoll(l.c_str() + rw + 10), std::atoll(l.c_str() + at + 13)};
      e.newest = std::max(e.newest, m);
    }
    return e.newest;
  }

 private:
  struct Entry {
    size_t offset = 0;
    OuterMark newest{-1, -1};
  };
  std::map<std::string, Entry> seen_;
};

int usage() {
  std::fprintf(stderr, "usage: intellect_chaos [--nodes N] [--max-nodes M] [--seconds S] [--seed X] [--out DIR] "
                       "[--netns] [--lose-state] [--overlap none|eager|delayed] [--all-reduce ring|direct]\n"
                       "                       [--byzantine scale|understate|accuse|alter]\n"
                       "                       [--status PORT|IPV4:PORT] [--set k=v]...\n"
                       "  --status: the coordinator serves the run's dashboard there (kept across its restarts)\n");
  return 2;
}

struct ChaosOptions {
  int nodes = 3, max_nodes = 5, seconds = 60;
  uint64_t seed = 1;
  std::string out = "runs/chaos";
  std::vector<std::string> extra;  // --set k=v for every node
  bool use_netns = false, lose_state = false;
  std::string overlap = "none", all_reduce = "ring", byzantine, status_listen;
};

// 0 when the command line is good; else the exit status, the reason printed.
int parse_options(int argc, char** argv, ChaosOptions& o) {
  auto one_of = [](const char* flag, const std::string& v, std::initializer_list<const char*> allowed,
                   const char* list) {
    for (const char* a : allowed)
      if (v == a) return true;
    std::fprintf(stderr, "intellect_chaos: %s must be %s, got '%s'\n", flag, list, v.c_str());
    return false;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--netns") {
      o.use_netns = true;
      continue;
    }
    if (a == "--lose-state") {
      o.lose_state = true;
      continue;
    }
    if (i + 1 >= argc) return usage();
    const std::string v = argv[++i];
    if (a == "--nodes") o.nodes = std::atoi(v.c_str());
    else if (a == "--max-nodes") o.max_nodes = std::atoi(v.c_str());
    else if (a == "--seconds") o.seconds = std::atoi(v.c_str());
    else if (a == "--seed") o.seed = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--out") o.out = v;
    else if (a == "--set") o.extra.push_back(v);
    else if (a == "--status") o.status_listen = v;
    else if (a == "--byzantine") {
      if (!one_of("--byzantine", v, {"scale", "understate", "accuse", "alter"}, "scale, understate, accuse or alter"))
        return 2;
      o.byzantine = v;
    } else if (a == "--overlap") {
      if (!one_of("--overlap", v, {"none", "eager", "delayed"}, "none, eager or delayed")) return 2;
      o.overlap = v;
    } else if (a == "--all-reduce") {
      if (!one_of("--all-reduce", v, {"ring", "direct"}, "ring or direct")) return 2;
      o.all_reduce = v;
    } else {
      return usage();
    }
  }
  if (o.nodes < 2 || o.max_nodes < o.nodes || o.seconds < 1) return usage();
  return 0;
}

// The driver of one chaos run: it owns the processes it starts (the
// coordinator and the nodes), the network lab under --netns, and the record
// of what it did. One thread, main's, runs it from prepare() to report().
class ChaosRun {
 public:
  explicit ChaosRun(const ChaosOptions& o) : o_(o), out_(o.out), rng_(o.seed) {}

  // The corpus, the run's secret or node keys, the lab, the coordinator's settings.
  void prepare() {
    const std::string bin = std::filesystem::canonical("/proc/self/exe").parent_path().string();
    train_ = bin + "/intellect_train";
    std::filesystem::remove_all(out_);
    make_dirs(out_);
    corpus_ = out_ + "/corpus";
    const int rc = std::system((bin + "/make_corpus --out " + corpus_ + " --docs 600 --val-docs 0 > " + out_ +
                                "/make_corpus.log 2>&1").c_str());
    if (rc != 0) fail("make_corpus failed: see ", out_, "/make_corpus.log");
    const std::string secret = out_ + "/run.secret";
    {
      std::vector<uint8_t> key(32);
      std::mt19937_64 r(o_.seed ^ 0x5ec12e7);
      for (auto& b : key) b = static_cast<uint8_t>(r());
      write_file_atomic(secret, key.data(), key.size());
      ::chmod(secret.c_str(), 0600);
    }
    if (o_.use_netns) lab_ = std::make_unique<NetLab>();
    const uint16_t port = free_port();
    coord_ = (lab_ ? NetLab::host() : std::string("127.0.0.1")) + ":" + std::to_string(port);
    // --byzantine accuse|alter: node keys. Every process's key file under
    // keys/, its public line appended to the allowlist (reread on change)
    // before the process starts.
    keyed_ = o_.byzantine == "accuse" || o_.byzantine == "alter";
    if (keyed_) make_dirs(out_ + "/keys");
    mesh_ = {keyed_ ? std::string("mesh.secret_file=") : "mesh.secret_file=" + secret, "mesh.heartbeat_ms=300",
             "mesh.timeout_ms=2000", "mesh.ready_timeout_ms=4000", "mesh.round_timeout_ms=30000",
             "mesh.message_timeout_ms=3000", "mesh.max_retries=6"};
    coord_sets_ = mesh_;
    if (keyed_) {
      const std::vector<std::string> k = key_for("coordinator");
      coord_sets_.insert(coord_sets_.end(), k.begin(), k.end());
    }
    coord_sets_.insert(coord_sets_.end(), {"mesh.listen=" + coord_, "train.out_dir=" + out_ + "/coordinator",
                                           "mesh.min_ring=" + std::to_string(o_.nodes),
                                           "diloco.all_reduce=" + o_.all_reduce});
    if (!o_.status_listen.empty()) {
      // A fixed port: the coordinator is restarted on the same one, and the URL stays valid.
      const auto [host, port] = parse_http_listen(o_.status_listen, "--status");
      if (port == 0) fail("--status needs a fixed port (the coordinator is restarted on it), not 0");
      coord_sets_.push_back("mesh.status_listen=" + host + ":" + std::to_string(port));
      dashboard_ = "http://" + host + ":" + std::to_string(port) + "/";
    }
    faults_ = {{"kill9", 0}, {"stop", 0}, {"start", 0}, {"coordinator_restart", 0},
               {"kill_half", 0}, {"evicted_restarted", 0}, {"kill_holders", 0}};
    if (lab_) faults_["partition"] = 0;
  }

  // The coordinator, the first nodes and the attacker, if any.
  void start() {
    newest_at_ = Clock::now();  // stalls count from the start, not from the corpus being made
    std::printf("intellect_chaos: coordinator at %s, %d nodes, up to %d, %d s, seed %llu, overlap %s, %s pattern, "
                "logs under %s\n",
                coord_.c_str(), o_.nodes, o_.max_nodes, o_.seconds, static_cast<unsigned long long>(o_.seed),
                o_.overlap.c_str(), o_.all_reduce.c_str(), out_.c_str());
    if (!dashboard_.empty()) std::printf("intellect_chaos: dashboard of the run: %s\n", dashboard_.c_str());
    std::fflush(stdout);
    start_coordinator();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    for (int i = 0; i < o_.nodes; ++i) start_node();
    if (!o_.byzantine.empty())
      std::printf("  started %s, which attacks the run (%s)\n", start_node(true).c_str(), o_.byzantine.c_str());
  }

  // Faults until the time is up or the driver is interrupted (Ctrl-C or
  // SIGTERM end the faults early; the nodes are still stopped, checked and
  // cleaned up as at the end of a full run). The first faults are one of each
  // kind (shuffled), then at random; half the nodes at once (kind 4) needs
  // four running, so the plan starts one first.
  void inject_faults() {
    std::vector<int> plan = {0, 1, 2, 3};
    if (lab_) plan.push_back(5);
    std::shuffle(plan.begin(), plan.end(), rng_);
    const Clock::time_point t_end = Clock::now() + std::chrono::seconds(o_.seconds);
    Clock::time_point next_fault = Clock::now() + std::chrono::milliseconds(static_cast<int>(uniform(4000, 6000)));
    size_t fault_no = 0;
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    t_start_ = Clock::now();
    while (Clock::now() < t_end && !g_interrupted) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      tick();
      if (Clock::now() < next_fault) continue;
      next_fault = Clock::now() + std::chrono::milliseconds(static_cast<int>(uniform(2000, 5000)));
      const int n_kinds = 5 + (lab_ ? 1 : 0) + (o_.lose_state ? 1 : 0);
      int kind = fault_no < plan.size() ? plan[fault_no] : static_cast<int>(uniform(0, n_kinds));
      if (o_.lose_state && kind == n_kinds - 1) kind = 6;
      if (fault_no == plan.size()) kind = 4;
      ++fault_no;
      if (!inject(kind)) --fault_no;  // a node started to make room for kind 4: it comes again
      std::fflush(stdout);
    }
    ran_s_ = std::chrono::duration<double>(Clock::now() - t_start_).count();
  }

  // The end: continue the stopped, then ask everyone to stop; nobody may hang.
  void stop_everyone() {
    for (Proc& p : procs_)
      if (p.alive && p.stopped) ::kill(p.pid, SIGCONT);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    reap();
    for (Proc& p : procs_)
      if (p.alive) ::kill(p.pid, SIGTERM);
    for (Proc& p : procs_) {
      if (!p.alive) continue;
      int st = 0;
      const Clock::time_point give_up = Clock::now() + std::chrono::seconds(60);
      while (::waitpid(p.pid, &st, WNOHANG) != p.pid) {
        if (Clock::now() > give_up) {
          failures_.push_back(p.name + " did not stop within 60 s of SIGTERM (hang)");
          ::kill(p.pid, SIGKILL);
          ::waitpid(p.pid, &st, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      p.alive = false;
      if (WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 75)
        failures_.push_back(str(p.name, " exited ", WEXITSTATUS(st), " on SIGTERM (see its train.log)"));
    }
    ::kill(coordinator_.pid, SIGINT);
    ::waitpid(coordinator_.pid, nullptr, 0);
  }

  // Checks what the nodes wrote, prints and writes the summary; the exit status.
  int report() {
    nlohmann::json summary = check_outer_steps();
    summary["byzantine"] = check_attack();
    if (g_interrupted) std::printf("intellect_chaos: interrupted after %.0f s of %d\n", ran_s_, o_.seconds);
    summary["seconds"] = o_.seconds;
    summary["ran_seconds"] = ran_s_;
    summary["interrupted"] = g_interrupted != 0;
    summary["seed"] = o_.seed;
    summary["overlap"] = o_.overlap;
    summary["all_reduce"] = o_.all_reduce;
    summary["faults"] = faults_;
    summary["longest_stall_s"] = longest_stall_s_;
    summary["failures"] = failures_;
    const std::string text = summary.dump(2) + "\n";
    write_file_atomic(out_ + "/chaos_summary.json", text.data(), text.size());
    std::printf("%s", text.c_str());
    std::printf("intellect_chaos: %s\n", failures_.empty() ? "all checks passed" : "CHECKS FAILED");
    return failures_.empty() ? 0 : 1;
  }

 private:
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng_); }

  std::vector<std::string> with_sets(std::vector<std::string> args, const std::vector<std::string>& sets) const {
    for (const std::string& s : sets) args.insert(args.end(), {"--set", s});
    return args;
  }

  std::vector<std::string> key_for(const std::string& name) {
    const std::string path = out_ + "/keys/" + name + ".key", allowlist = out_ + "/allowlist";
    std::filesystem::remove(path);
    std::filesystem::remove(path + ".pub");
    const NodeKey key = NodeKey::generate();
    write_node_key(path, key, name);
    allowed_ += public_key_hex(key.public_key()) + " " + name + "\n";
    write_file_atomic(allowlist, allowed_.data(), allowed_.size());
    return {"mesh.node_key_file=" + path, "mesh.allowlist_file=" + allowlist};
  }

  void start_coordinator() {
    coordinator_.pid = spawn(with_sets({train_, "--coordinator"}, coord_sets_), out_ + "/coordinator.log");
    coordinator_.alive = true;
  }

  // Starts a node (the attacker with `attacker`); returns its name.
  std::string start_node(bool attacker = false) {
    Proc p;
    p.index = next_node_++;
    p.name = attacker ? "byzantine-" + std::to_string(p.index) : "node-" + std::to_string(p.index);
    p.byzantine = attacker;
    std::vector<std::string> sets = mesh_;
    if (o_.byzantine == "alter") sets.push_back("diloco.compression=sparse");
    if (attacker && o_.byzantine == "accuse") {
      sets.push_back("mesh.attack_false_accusation=1");
    } else if (attacker && o_.byzantine == "alter") {
      sets.push_back("mesh.attack_alter_forwarded=1");
    } else if (attacker) {
      sets.push_back("mesh.attack_scale=100");
      if (o_.byzantine == "understate") sets.push_back("mesh.attack_announce=0.01");
    }
    if (keyed_) {
      const std::vector<std::string> k = key_for(p.name + "-" + std::to_string(p.index));
      sets.insert(sets.end(), k.begin(), k.end());
    }
    if (lab_) {
      lab_->add(p.index);
      sets.push_back("mesh.listen=" + NetLab::ip(p.index) + ":0");
    }
    sets.insert(sets.end(),
                {"mesh.coordinator=" + coord_, "mesh.name=" + p.name, "train.out_dir=" + out_ + "/" + p.name,
                 "diloco.enabled=true", "diloco.inner_steps=5", "train.steps=1000000", "train.threads=1",
                 "model.dim=48", "model.ffn_dim=128", "model.head_dim=12", "model.n_layers=2",
                 "train.eval_every=0", "train.log_every=1000", "data.train=" + corpus_ + "/train_*.bin",
                 "data.val=", "data.partitions=" + std::to_string(o_.max_nodes + 64), "ckpt.save_final=false",
                 "diloco.overlap=" + o_.overlap, "diloco.all_reduce=" + o_.all_reduce});
    sets.insert(sets.end(), o_.extra.begin(), o_.extra.end());
    make_dirs(out_ + "/" + p.name);
    p.pid = spawn(with_sets({train_}, sets), out_ + "/" + p.name + "/train.log", lab_ ? lab_->ns(p.index) : "");
    p.alive = true;
    procs_.push_back(p);
    return procs_.back().name;
  }

  // Faults never take the last running node that holds the run's newest
  // state (with none left the run must go back to an older one), except
  // the --lose-state fault, which does just that. Holders are the running
  // nodes at the newest outer step any running node has reached (one that
  // is behind cannot give a joiner that step).
  OuterMark newest_of(const Proc& p) { return progress_.newest(out_ + "/" + p.name + "/metrics.jsonl"); }
  int state_holders_left_without(const std::vector<size_t>& victims) {
    OuterMark newest{-1, -1};
    for (const Proc& p : procs_)
      if (p.alive && !p.stopped) newest = std::max(newest, newest_of(p));
    if (newest.second < 0) return 1;  // no outer step yet: nothing to lose
    int n = 0;
    for (size_t i = 0; i < procs_.size(); ++i)
      if (procs_[i].alive && !procs_[i].stopped && newest_of(procs_[i]) == newest &&
          std::find(victims.begin(), victims.end(), i) == victims.end())
        ++n;
    return n;
  }
  // One running node at random, but not the last holder of the newest state.
  size_t pick_victim(const std::vector<size_t>& up) {
    size_t v = up[static_cast<size_t>(uniform(0, up.size())) % up.size()];
    if (state_holders_left_without({v}) < 1)
      for (size_t u : up)
        if (state_holders_left_without({u}) >= 1) v = u;
    return v;
  }
  std::vector<size_t> running() const {  // the honest nodes faults may pick
    std::vector<size_t> v;
    for (size_t i = 0; i < procs_.size(); ++i)
      if (procs_[i].alive && !procs_[i].stopped && !procs_[i].byzantine) v.push_back(i);
    return v;
  }

  // Processes that ended: an evicted node (exit 75) is replaced; one that
  // ended on its own is a failure; the attacker's end is recorded.
  void reap() {
    for (Proc& p : procs_) {
      if (!p.alive) continue;
      int st = 0;
      if (::waitpid(p.pid, &st, WNOHANG) != p.pid) continue;
      p.alive = false;
      if (lab_) lab_->remove(p.index);
      if (p.killed_by_us) continue;
      if (p.byzantine) {  // refused by the run (understate), or a failure of its own
        std::printf("  %s (the attacker) ended: %s\n", p.name.c_str(),
                    WIFEXITED(st) ? str("exit ", WEXITSTATUS(st)).c_str() : str("signal ", WTERMSIG(st)).c_str());
        attacker_exits_.push_back(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        continue;
      }
      if (WIFEXITED(st) && WEXITSTATUS(st) == 75) {
        count("evicted_restarted");
        const std::string gone = p.name;  // start_node() grows procs_: p is not to be used after it
        const std::string replacement = start_node();
        std::printf("  %s was evicted (exit 75); started a replacement: %s\n", gone.c_str(), replacement.c_str());
        return;
      }
      failures_.push_back(str(p.name, " ended on its own: ",
                              WIFEXITED(st) ? str("exit ", WEXITSTATUS(st)) : str("signal ", WTERMSIG(st)),
                              " (see its train.log)"));
    }
  }

  // Every 100 ms: reap, continue stopped nodes whose time came, heal cuts
  // whose time came, and once a second note the newest outer step (stalls).
  void tick() {
    reap();
    for (Proc& p : procs_)
      if (p.alive && p.stopped && Clock::now() >= p.cont_at) {
        ::kill(p.pid, SIGCONT);
        p.stopped = false;
        std::printf("  %s continued\n", p.name.c_str());
      }
    for (auto c = cuts_.begin(); c != cuts_.end();) {
      if (Clock::now() < c->heal_at) {
        ++c;
        continue;
      }
      lab_->heal(c->a, c->b);
      std::printf("  partition node-%d | node-%d healed\n", c->a, c->b);
      c = cuts_.erase(c);
    }
    if (Clock::now() - sampled_at_ > std::chrono::seconds(1)) {
      sampled_at_ = Clock::now();
      OuterMark now_outer = newest_outer_;
      for (const Proc& p : procs_)
        if (p.alive) now_outer = std::max(now_outer, newest_of(p));
      const double stalled = std::chrono::duration<double>(Clock::now() - newest_at_).count();
      longest_stall_s_ = std::max(longest_stall_s_, stalled);
      if (now_outer > newest_outer_) {
        newest_outer_ = now_outer;
        newest_at_ = Clock::now();
      }
    }
  }

  void count(const char* fault) { faults_[fault] = faults_[fault].get<int>() + 1; }

  // kill -9 of several nodes at once; returns their names for the log.
  std::string kill_all(const std::vector<size_t>& victims) {
    std::string names;
    for (size_t v : victims) {
      ::kill(procs_[v].pid, SIGKILL);
      procs_[v].killed_by_us = true;
      names += " " + procs_[v].name;
    }
    return names;
  }

  // Fault kinds: 0 kill -9 one node, 1 SIGSTOP one, 2 start one, 3 restart
  // the coordinator, 4 kill -9 half the nodes, 5 partition two (--netns),
  // 6 kill every holder of the newest step (--lose-state). False when kind 4
  // found too few nodes and started one instead.
  bool inject(int kind) {
    const std::vector<size_t> up = running();
    if (kind == 4 && up.size() < 4 && static_cast<int>(up.size()) < o_.max_nodes) {
      count("start");  // make room for the mass failure next time
      std::printf("  started %s\n", start_node().c_str());
      return false;
    }
    if (kind == 4 && up.size() >= 4) kill_half(up);
    else if (kind == 6 && up.size() >= 2) kill_holders(up);
    else if (kind == 5 && up.size() >= 2) partition(up);
    else if (kind == 0 && up.size() > 2) kill_one(up);
    else if (kind == 1 && up.size() > 2) stop_one(up);
    else if (kind == 2 || up.size() <= 2) {
      if (static_cast<int>(running().size()) < o_.max_nodes) {
        count("start");
        std::printf("  started %s\n", start_node().c_str());
      }
    } else {
      restart_coordinator();
    }
    return true;
  }

  void kill_half(const std::vector<size_t>& up) {
    std::vector<size_t> pick = up;
    std::shuffle(pick.begin(), pick.end(), rng_);
    std::vector<size_t> victims;
    for (size_t i = 0; i < pick.size() && victims.size() < up.size() / 2; ++i) {
      std::vector<size_t> more = victims;
      more.push_back(pick[i]);
      if (state_holders_left_without(more) >= 1) victims = more;
    }
    const std::string names = kill_all(victims);
    count("kill_half");
    std::printf("  kill -9 half the nodes at once:%s\n", names.c_str());
  }

  // Every running node at the newest outer step, at once, while some node
  // behind it is left: the run must go back to what that one holds.
  void kill_holders(const std::vector<size_t>& up) {
    OuterMark newest{-1, -1};
    for (size_t u : up) newest = std::max(newest, newest_of(procs_[u]));
    std::vector<size_t> victims;
    for (size_t u : up)
      if (newest_of(procs_[u]) == newest) victims.push_back(u);
    // A survivor that has done an outer step of its own (not a joiner still
    // fetching, whose only state is step 0).
    bool survivor = false;
    for (size_t u : up) survivor |= newest_of(procs_[u]) != newest && newest_of(procs_[u]).second >= 0;
    if (newest.second < 0 || !survivor) return;
    const std::string names = kill_all(victims);
    count("kill_holders");
    std::printf("  kill -9 every holder of outer step %lld:%s\n", static_cast<long long>(newest.second),
                names.c_str());
  }

  void partition(const std::vector<size_t>& up) {
    std::vector<size_t> pick = up;
    std::shuffle(pick.begin(), pick.end(), rng_);
    const int a = procs_[pick[0]].index, b = procs_[pick[1]].index;
    lab_->cut(a, b);
    cuts_.push_back({a, b, Clock::now() + std::chrono::milliseconds(static_cast<int>(uniform(4000, 15000)))});
    count("partition");
    std::printf("  partition node-%d | node-%d (both still reach everyone else)\n", a, b);
  }

  void kill_one(const std::vector<size_t>& up) {
    Proc& p = procs_[pick_victim(up)];
    ::kill(p.pid, SIGKILL);
    p.killed_by_us = true;
    count("kill9");
    std::printf("  kill -9 %s\n", p.name.c_str());
  }

  void stop_one(const std::vector<size_t>& up) {
    Proc& p = procs_[pick_victim(up)];
    ::kill(p.pid, SIGSTOP);
    p.stopped = true;
    p.cont_at = Clock::now() + std::chrono::milliseconds(static_cast<int>(uniform(500, 4000)));
    count("stop");
    std::printf("  SIGSTOP %s\n", p.name.c_str());
  }

  void restart_coordinator() {
    ::kill(coordinator_.pid, SIGKILL);
    ::waitpid(coordinator_.pid, nullptr, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(uniform(300, 1500))));
    start_coordinator();
    count("coordinator_restart");
    std::printf("  coordinator killed and restarted\n");
  }

  // Every node's metrics: each attempt at an outer step agreed (after a
  // rewind the run does the lost steps again, from other data, so their
  // hashes differ from the first time), the loss fell, outer steps kept
  // completing. Returns the summary's figures.
  nlohmann::json check_outer_steps() {
    std::map<OuterMark, std::set<std::string>> hashes;
    std::map<OuterMark, int> writers;
    int64_t retries = 0, late = 0, max_outer = 0, rewinds = 0;
    nlohmann::json joins = nlohmann::json::array();
    std::vector<std::pair<int64_t, double>> losses;
    for (const Proc& p : procs_) {
      for (const nlohmann::json& l : read_metrics(out_ + "/" + p.name + "/metrics.jsonl")) {
        losses.emplace_back(l.value("step", int64_t{0}), l.value("loss", 0.0));
        if (l.contains("joined")) joins.push_back({{"node", p.name}, {"joined", l["joined"]}});
        if (!l.contains("outer")) continue;
        const auto& o = l["outer"];
        const int64_t k = o["outer_step"].get<int64_t>();
        const OuterMark m{o.value("rewinds", int64_t{0}), k};
        hashes[m].insert(o["hash"].get<std::string>());
        ++writers[m];
        rewinds = std::max(rewinds, m.first);
        retries += o.value("retries", int64_t{0});
        late += o.value("late", false);
        max_outer = std::max(max_outer, k);
      }
    }
    int diverged = 0;
    for (const auto& [m, h] : hashes)
      if (h.size() > 1) {
        ++diverged;
        failures_.push_back(str("outer step ", m.second, m.first ? str(" (after rewind ", m.first, ")") : "", ": ",
                                h.size(), " different hashes among ", writers[m], " nodes"));
      }
    std::sort(losses.begin(), losses.end());
    double first = 0, last = 0;
    const size_t w = std::min<size_t>(20, losses.size() / 4);
    for (size_t i = 0; i < w; ++i) {
      first += losses[i].second / w;
      last += losses[losses.size() - 1 - i].second / w;
    }
    if (w == 0 || !(last < first - 0.3)) failures_.push_back(str("the loss did not fall: ", first, " -> ", last));
    if (max_outer < 3) failures_.push_back(str("only ", max_outer, " outer steps completed"));
    // Outer steps must keep completing: a stretch without one longer than a
    // few round timeouts (30 s each here) means the run stalled.
    if (longest_stall_s_ > 90)
      failures_.push_back(str("no outer step completed for ", longest_stall_s_, " s (the run stalled)"));
    return {{"outer_steps", max_outer}, {"outer_steps_checked", hashes.size()},
            {"diverged", diverged},     {"retries", retries},
            {"rewinds", rewinds},       {"late_catch_ups", late},
            {"joins", joins},           {"loss_first", first},
            {"loss_last", last}};
  }

  // What the coordinator said about the attacker, across its restarts
  // (null without --byzantine). Its pseudo-gradient never made it into an
  // average: every honest node's hashes agree, and an attacker taken into a
  // ring would have moved everyone's loss (check_outer_steps).
  nlohmann::json check_attack() {
    if (o_.byzantine.empty()) return nullptr;
    int left_out = 0, refused = 0, honest_refused = 0;
    std::ifstream log(out_ + "/coordinator.log");
    for (std::string line; std::getline(log, line);) {
      // The line that refuses a node names it first: "node 7 (node-2, ...) sent more ...".
      static const std::regex refused_honest(R"(^(\[coordinator\] )?node [0-9]+ \(node-)");
      if (line.find("refused for the rest of the run") != std::string::npos &&
          line.find(" leaves the run: ") == std::string::npos && std::regex_search(line, refused_honest))
        ++honest_refused;
      if (line.find("byzantine") == std::string::npos) continue;
      left_out += line.find("left out of the ring: its pseudo-gradient norm") != std::string::npos;
      refused += line.find("refused for the rest of the run") != std::string::npos;
    }
    const std::string& mode = o_.byzantine;
    if (mode == "accuse" && refused == 0) failures_.push_back("the false accuser was never refused");
    if (mode == "alter" && refused == 0)
      failures_.push_back("the forwarder that alters others' sparse chunks was never refused");
    if (honest_refused > 0) failures_.push_back(str(honest_refused, " honest node(s) refused for the rest of the run"));
    if (mode == "scale" && left_out == 0)
      failures_.push_back("the attacker (norm x100, announced) was never left out of a ring as an outlier");
    if (mode == "understate" && refused == 0)
      failures_.push_back("the attacker (sends x100, announces less) was never caught and refused");
    return {{"mode", mode}, {"left_out_of_rings", left_out}, {"refused", refused},
            {"honest_refused", honest_refused}, {"attacker_exits", attacker_exits_}};
  }

  struct Cut {
    int a, b;
    Clock::time_point heal_at;
  };

  const ChaosOptions o_;
  const std::string out_;
  std::mt19937_64 rng_;
  std::string train_, corpus_, coord_, dashboard_, allowed_;
  bool keyed_ = false;
  std::vector<std::string> mesh_, coord_sets_;  // every process's mesh settings; the coordinator's
  std::unique_ptr<NetLab> lab_;
  Proc coordinator_{"coordinator"};
  std::vector<Proc> procs_;
  int next_node_ = 0;
  OuterProgress progress_;
  OuterMark newest_outer_{-1, -1};
  Clock::time_point newest_at_ = Clock::now(), sampled_at_{}, t_start_{};
  double longest_stall_s_ = 0, ran_s_ = 0;
  nlohmann::json faults_;
  std::vector<Cut> cuts_;
  std::vector<std::string> failures_;
  std::vector<int> attacker_exits_;
};

}  // namespace

int main(int argc, char** argv) {
  ChaosOptions o;
  if (const int rc = parse_options(argc, argv, o); rc != 0) return rc;
  try {
    ChaosRun run(o);
    run.prepare();
    run.start();
    run.inject_faults();
    run.stop_everyone();
    return run.report();
  } catch (const Error& e) {
    std::fprintf(stderr, "intellect_chaos: error: %s\n", e.what());
    return 1;
  }
}
