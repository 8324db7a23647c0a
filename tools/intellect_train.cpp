// intellect_train: trains a model from a JSON config.
//   intellect_train [--config FILE] [--set dotted.key=value]... [--print-config]
// Without --config it runs the embedded default (configs/tiny.json).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <sodium.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "dist/coordinator.h"
#include "dist/mesh_node.h"
#include "train/config.h"
#include "train/memory_estimate.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/file.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C ends at once
}

void usage(FILE* f) {
  std::fprintf(f,
               "usage: intellect_train [--config FILE] [--set dotted.key=value]... [--print-config]\n"
               "                       [--plan-memory] [--local-nodes N | --coordinator]\n"
               "  --config FILE     JSON config (default: the embedded configs/tiny.json)\n"
               "  --set K=V         override one field, e.g. --set train.steps=50 --set optim.lr=1e-3\n"
               "  --print-config    print the config after overrides and exit\n"
               "  --plan-memory     print what one GPU needs for this config (weights, gradients,\n"
               "                    optimizer, buffers, and the recompute plan of the activations)\n"
               "                    on train.gpus GPUs of train.memory_limit_gib each, and exit;\n"
               "                    no GPU needed (e.g. --set train.gpus=4 --set train.memory_limit_gib=80)\n"
               "  --local-nodes N   a DiLoCo swarm on this machine: a coordinator and N training\n"
               "                    processes on loopback, each with its own data partition and\n"
               "                    log under <train.out_dir>/node-<i>/\n"
               "  --coordinator     run only the coordinator of a mesh, on mesh.listen, with\n"
               "                    mesh.secret_file, until Ctrl-C / SIGTERM\n"
               "  With --local-nodes or --coordinator, --set mesh.status_listen=8080 serves the run's\n"
               "  dashboard on http://127.0.0.1:8080/ (/api/status: JSON, /metrics: Prometheus)\n"
               "Ctrl-C stops after the current step and saves a checkpoint and the model.\n");
}

intellect::CoordinatorOptions coordinator_options(const intellect::Config& c, const std::string& secret_path) {
  intellect::CoordinatorOptions co;
  co.listen = c.mesh.listen;
  co.secret = intellect::load_run_secret(secret_path);
  co.heartbeat_interval = std::chrono::milliseconds(c.mesh.heartbeat_ms);
  co.membership.heartbeat_timeout = std::chrono::milliseconds(c.mesh.timeout_ms);
  co.membership.ready_timeout = std::chrono::milliseconds(c.mesh.ready_timeout_ms);
  // A holder of the newest state that is merely slow gets two heartbeat
  // timeouts to be heard from before the run goes back to an older one.
  co.rewind_after = 2 * co.membership.heartbeat_timeout;
  co.max_retries = static_cast<int>(c.mesh.max_retries);
  co.membership.min_ring = static_cast<size_t>(c.mesh.min_ring);
  co.state_file = c.train.out_dir + "/coordinator.json";
  co.status_listen = c.mesh.status_listen;
  co.status_token_file = c.mesh.status_token_file;
  co.status_title = "intellect run: " + c.source;
  co.log = [](const std::string& m) { std::fprintf(stderr, "[coordinator] %s\n", m.c_str()); };
  return co;
}

// The coordinator alone, until a signal.
int run_coordinator(const intellect::Config& c) {
  using namespace intellect;
  if (c.mesh.secret_file.empty()) fail("--coordinator needs mesh.secret_file: every connection is authenticated");
  make_dirs(c.train.out_dir);
  Coordinator coordinator(coordinator_options(c, c.mesh.secret_file));
  if (!coordinator.status_url().empty())
    std::fprintf(stderr, "intellect: the run's dashboard: %s\n", coordinator.status_url().c_str());
  coordinator.run(g_stop);
  std::fprintf(stderr, "intellect: coordinator stopped; outer steps agreed: %lld, diverged: %lld\n",
               static_cast<long long>(coordinator.agreed_steps()), static_cast<long long>(coordinator.disagreed_steps()));
  return coordinator.disagreed_steps() > 0 ? 1 : 0;
}

// A coordinator thread and N copies of this program on loopback.
int run_local_swarm(int n, const std::string& config_path, const std::vector<std::string>& overrides,
                    const char* self) {
  using namespace intellect;
  const Config base = load_config(config_path, overrides);
  const std::string root = base.train.out_dir;
  make_dirs(root);
  std::string secret_path = base.mesh.secret_file;
  if (secret_path.empty()) {
    // A fresh secret for this swarm, readable by this user only.
    if (sodium_init() < 0) fail("libsodium failed to initialise");
    // As text (64 hex digits), like `openssl rand -hex 32`: raw bytes ending
    // in '\n' (1 run in 256) lost that byte to the reader's line-ending trim
    // and were refused as 31 bytes.
    std::vector<uint8_t> key(32);
    randombytes_buf(key.data(), key.size());
    std::string text(2 * key.size() + 1, '\0');
    sodium_bin2hex(text.data(), text.size(), key.data(), key.size());
    text.back() = '\n';
    secret_path = root + "/swarm.secret";
    write_file_atomic(secret_path, text.data(), text.size());
    ::chmod(secret_path.c_str(), 0600);
  }
  CoordinatorOptions co = coordinator_options(base, secret_path);
  co.listen = "127.0.0.1:0";
  co.membership.min_ring = static_cast<size_t>(n);
  co.status_title = intellect::str("intellect swarm of ", n, ": ", base.source);
  Coordinator coordinator(co);
  // Stdout, as the nodes' step lines are in their logs: where to watch them all.
  if (!coordinator.status_url().empty()) {
    std::fprintf(stdout, "intellect: dashboard of the swarm: %s\n", coordinator.status_url().c_str());
    std::fflush(stdout);
  }
  std::atomic<bool> stop_coordinator{false};
  std::thread coordinator_thread([&] { coordinator.run(stop_coordinator); });

  std::vector<pid_t> children;
  for (int i = 0; i < n; ++i) {
    const std::string dir = root + "/node-" + std::to_string(i);
    make_dirs(dir);
    std::vector<std::string> args = {self};
    if (!config_path.empty()) args.insert(args.end(), {"--config", config_path});
    for (const std::string& o : overrides) args.insert(args.end(), {"--set", o});
    for (const std::string& o :
         {std::string("diloco.enabled=true"), "mesh.coordinator=127.0.0.1:" + std::to_string(coordinator.port()),
          "mesh.secret_file=" + secret_path, "mesh.name=node-" + std::to_string(i), "train.out_dir=" + dir,
          "data.partitions=" + std::to_string(std::max<int64_t>(n, base.data.partitions))})
      args.insert(args.end(), {"--set", o});
    const pid_t pid = ::fork();
    if (pid < 0) fail("fork failed");
    if (pid == 0) {
      const std::string log = dir + "/train.log";
      FILE* f = std::freopen(log.c_str(), "w", stdout);
      if (f) ::dup2(::fileno(stdout), 2);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::_Exit(127);
    }
    children.push_back(pid);
    std::fprintf(stderr, "intellect: node-%d started (pid %d), log %s/train.log\n", i, pid, dir.c_str());
  }
  int failures = 0;
  size_t done = 0;
  std::vector<bool> finished(children.size(), false);
  bool forwarded = false;
  while (done < children.size()) {
    if (g_stop.load() && !forwarded) {  // pass Ctrl-C on: every node saves and stops
      for (size_t i = 0; i < children.size(); ++i)
        if (!finished[i]) ::kill(children[i], SIGTERM);
      forwarded = true;
    }
    for (size_t i = 0; i < children.size(); ++i) {
      if (finished[i]) continue;
      int status = 0;
      if (::waitpid(children[i], &status, WNOHANG) != children[i]) continue;
      finished[i] = true;
      ++done;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      failures += !ok;
      std::fprintf(stderr, "intellect: node-%zu %s\n", i,
                   ok ? "finished" : (WIFEXITED(status) ? intellect::str("failed with exit code ", WEXITSTATUS(status)).c_str()
                                                         : "was killed"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  stop_coordinator = true;
  coordinator_thread.join();
  std::fprintf(stderr, "intellect: swarm of %d: %d node(s) failed; outer steps where all nodes agreed: %lld, "
               "diverged: %lld\n", n, failures, static_cast<long long>(coordinator.agreed_steps()),
               static_cast<long long>(coordinator.disagreed_steps()));
  return failures > 0 || coordinator.disagreed_steps() > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_only = false;
  bool plan_memory = false;
  int local_nodes = 0;
  bool coordinator_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "intellect_train: %s needs a value\n", flag);
        usage(stderr);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") config_path = value("--config");
    else if (a == "--set") overrides.push_back(value("--set"));
    else if (a.rfind("--set=", 0) == 0) overrides.push_back(a.substr(6));
    else if (a == "--print-config") print_only = true;
    else if (a == "--plan-memory") plan_memory = true;
    else if (a == "--coordinator") coordinator_only = true;
    else if (a == "--local-nodes") {
      local_nodes = std::atoi(value("--local-nodes").c_str());
      if (local_nodes < 1 || local_nodes > 64) {
        std::fprintf(stderr, "intellect_train: --local-nodes must be between 1 and 64\n");
        return 2;
      }
    }
    else if (a == "-h" || a == "--help") { usage(stdout); return 0; }
    else {
      std::fprintf(stderr, "intellect_train: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  try {
    const intellect::Config cfg = intellect::load_config(config_path, overrides);
    if (print_only) {
      std::printf("%s\n", cfg.json.dump(2).c_str());
      return 0;
    }
    if (plan_memory) {
      if (cfg.train.gpus < 1)
        intellect::fail(cfg.source, ": --plan-memory needs train.gpus set to the node's GPU count (it is 0: every "
                        "visible GPU); e.g. --set train.gpus=4");
      const intellect::MemoryEstimate e = intellect::estimate_gpu_memory(cfg, static_cast<int>(cfg.train.gpus));
      std::printf("%s: %s\n", cfg.source.c_str(), e.describe().c_str());
      return e.fits ? 0 : 3;
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    if (coordinator_only) return run_coordinator(cfg);
    if (local_nodes > 0) return run_local_swarm(local_nodes, config_path, overrides, argv[0]);
    intellect::train(cfg, &g_stop);
    return 0;
  } catch (const intellect::StoppedOnRequest& e) {
    std::fprintf(stderr, "intellect_train: %s; nothing saved beyond the last checkpoint (the node was waiting for "
                 "the run's state from a donor)\n", e.what());
    return 0;
  } catch (const intellect::EvictedFromRun& e) {
    std::fprintf(stderr, "intellect_train: %s. This node was evicted from the run (silent past mesh.timeout_ms); "
                 "start it again to rejoin: it will fetch the run's state from a donor (exit 75)\n", e.what());
    return 75;
  } catch (const intellect::Error& e) {
    std::fprintf(stderr, "intellect_train: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "intellect_train: unexpected error: %s\n", e.what());
    return 1;
  }
}
