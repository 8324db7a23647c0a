// intellect_train: trains a model from a JSON config.
//   intellect_train [--config FILE] [--set dotted.key=value]... [--print-config]
// Without --config it runs the embedded default (configs/tiny.json).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "train/config.h"
#include "train/trainer.h"
#include "util/error.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C ends at once
}

void usage(FILE* f) {
  std::fprintf(f,
               "usage: intellect_train [--config FILE] [--set dotted.key=value]... [--print-config]\n"
               "  --config FILE    JSON config (default: the embedded configs/tiny.json)\n"
               "  --set K=V        override one field, e.g. --set train.steps=50 --set optim.lr=1e-3\n"
               "  --print-config   print the config after overrides and exit\n"
               "Ctrl-C stops after the current step and saves the model.\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_only = false;
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
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    intellect::train(cfg, &g_stop);
    return 0;
  } catch (const intellect::Error& e) {
    std::fprintf(stderr, "intellect_train: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "intellect_train: unexpected error: %s\n", e.what());
    return 1;
  }
}
