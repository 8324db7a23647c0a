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

#include <filesystem>
#include <thread>

#include "dist/identity.h"

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
               "                    (node keys and an allowlist made for the swarm, unless\n"
               "                    mesh.secret_file is given)\n"
               "  --coordinator     run only the coordinator of a mesh, on mesh.listen, with\n"
               "                    mesh.node_key_file and mesh.allowlist_file (or mesh.secret_file),\n"
               "                    until Ctrl-C / SIGTERM; SIGHUP rereads the allowlist\n"
               "  With --local-nodes or --coordinator, --set mesh.status_listen=8080 serves the run's\n"
               "  dashboard on http://127.0.0.1:8080/ (/api/status: JSON, /metrics: Prometheus)\n"
               "Ctrl-C stops after the current step and saves a checkpoint and the model.\n");
}

void on_sighup(int) { intellect::request_allowlist_reload(); }

intellect::CoordinatorOptions coordinator_options(const intellect::Config& c) {
  intellect::CoordinatorOptions co;
  co.listen = c.mesh.listen;
  auto say = [](const std::string& m) { std::fprintf(stderr, "[coordinator] %s\n", m.c_str()); };
  co.credentials = intellect::load_credentials(c.mesh.secret_file, c.mesh.node_key_file, c.mesh.allowlist_file, say);
  say("authenticates with its " + co.credentials.describe() +
      (c.mesh.allowlist_file.empty() ? "" : "; admits the keys in " + c.mesh.allowlist_file));
  co.heartbeat_interval = std::chrono::milliseconds(c.mesh.heartbeat_ms);
  co.membership.heartbeat_timeout = std::chrono::milliseconds(c.mesh.timeout_ms);
  co.membership.ready_timeout = std::chrono::milliseconds(c.mesh.ready_timeout_ms);
  // A holder of the newest state that is merely slow gets two heartbeat
  // timeouts to be heard from before the run goes back to an older one.
  co.rewind_after = 2 * co.membership.heartbeat_timeout;
  co.max_retries = static_cast<int>(c.mesh.max_retries);
  co.membership.min_ring = static_cast<size_t>(c.mesh.min_ring);
  co.state_file = c.train.out_dir + "/coordinator.json";
  co.norm_outlier_factor = c.mesh.norm_outlier_factor;
  co.order_by_rate = c.mesh.order_rings_by_rate;
  co.direct = c.diloco.all_reduce == "direct";
  co.status_listen = c.mesh.status_listen;
  co.status_token_file = c.mesh.status_token_file;
  co.status_title = "intellect run: " + c.source;
  co.log = [](const std::string& m) { std::fprintf(stderr, "[coordinator] %s\n", m.c_str()); };
  return co;
}

// The coordinator alone, until a signal.
int run_coordinator(const intellect::Config& c) {
  using namespace intellect;
  if (c.mesh.secret_file.empty() && c.mesh.node_key_file.empty())
    fail("--coordinator needs credentials: mesh.node_key_file and mesh.allowlist_file (node keys; make one with "
         "`intellect_keygen --out coordinator.key`), or mesh.secret_file (a shared secret)");
  make_dirs(c.train.out_dir);
  std::signal(SIGHUP, on_sighup);
  Coordinator coordinator(coordinator_options(c));
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
  // Credentials for the swarm: the given shared secret, or (the default, as
  // on the open internet) a key per node and one for the coordinator, all on
  // one allowlist.
  std::vector<std::vector<std::string>> credential_sets;  // per node: its --set overrides
  Config coordinator_config = base;
  if (!base.mesh.secret_file.empty()) {
    credential_sets.assign(n, {"mesh.secret_file=" + base.mesh.secret_file});
  } else {
    const std::string keys = root + "/keys";
    make_dirs(keys);
    std::string allowlist;
    auto make_key = [&](const std::string& name) {
      const std::string path = keys + "/" + name + ".key";
      if (!std::filesystem::exists(path)) write_node_key(path, NodeKey::generate(), name);  // kept for a rerun
      const std::vector<uint8_t> pub = read_file(path + ".pub");
      allowlist.append(pub.begin(), pub.end());
      return path;
    };
    coordinator_config.mesh.node_key_file = make_key("coordinator");
    std::vector<std::string> node_keys;
    for (int i = 0; i < n; ++i) node_keys.push_back(make_key("node-" + std::to_string(i)));
    const std::string allowlist_path = root + "/allowlist";
    write_file_atomic(allowlist_path, allowlist.data(), allowlist.size());
    coordinator_config.mesh.allowlist_file = allowlist_path;
    for (int i = 0; i < n; ++i)
      credential_sets.push_back({"mesh.node_key_file=" + node_keys[i], "mesh.allowlist_file=" + allowlist_path});
  }
  CoordinatorOptions co = coordinator_options(coordinator_config);
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
          "mesh.name=node-" + std::to_string(i), "train.out_dir=" + dir,
          "data.partitions=" + std::to_string(std::max<int64_t>(n, base.data.partitions))})
      args.insert(args.end(), {"--set", o});
    for (const std::string& o : credential_sets[i]) args.insert(args.end(), {"--set", o});
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
