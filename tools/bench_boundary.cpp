// bench_boundary: the host work an overlapped DiLoCo boundary does on the
// training thread with diloco.compression=sparse, without a model or a GPU:
// committing the error feedback for the round just taken (the node's
// pseudo-gradient and what it sent, one contribution per ring lane), the
// outer step fused with the round's start (pass 1), the next round's
// pseudo-gradient and start (pass 2), the outer parameters' hash, and the
// error feedback's RMS for the metrics line. Each part is timed on its
// own; the median of --repeat runs is printed, then their sum, which is
// what the training thread is held for beside the GPU copies (the hash
// runs on a thread of its own in OuterSync, beside pass 2 and the copies).
//
//   bench_boundary [--config configs/150m.json | --values N] [--density D]
//                  [--lanes K] [--decay B] [--threads T] [--repeat R]
//
// It uses the public API only (ErrorFeedback, OuterOptimizer), so the same
// source builds against an older library for a before/after comparison.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dist/diloco.h"
#include "dist/error_feedback.h"
#include "dist/sparse.h"
#include "dist/sparse_allgather.h"
#include "model/layout.h"
#include "train/config.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/rng.h"

namespace {

using namespace intellect;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: bench_boundary [--config PATH | --values N] [--density D] [--lanes K] [--decay B] [--threads T] "
    "[--repeat R]\n"
    "  --config PATH  a model config; its parameter count is the vector size (default configs/150m.json)\n"
    "  --values N     the vector size instead of a config's\n"
    "  --density D    sparse top-k density (default 0.03)\n"
    "  --lanes K      contributions, one per ring lane (default 8)\n"
    "  --decay B      error-feedback decay (default 0.8)\n"
    "  --threads T    OpenMP threads (default: all cores)\n"
    "  --repeat R     runs; the median of each part is printed (default 3)\n";

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Pseudo-gradient-like values, filled on every core.
void fill(std::vector<float>& v, uint64_t seed, double sigma) {
  const int64_t n = static_cast<int64_t>(v.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(sigma * normal01(seed, static_cast<uint64_t>(i)));
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "configs/150m.json";
  size_t values = 0;
  double density = 0.03, decay = 0.8;
  int lanes = 8, threads = 0, repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n%s", a.c_str(), kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") config = next();
    else if (a == "--values") values = std::strtoull(next(), nullptr, 10);
    else if (a == "--density") density = std::atof(next());
    else if (a == "--lanes") lanes = std::atoi(next());
    else if (a == "--decay") decay = std::atof(next());
    else if (a == "--threads") threads = std::atoi(next());
    else if (a == "--repeat") repeat = std::atoi(next());
    else {
      std::fprintf(stderr, "unknown argument %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  try {
    if (values == 0) values = ParamLayout(load_config(config, {}).model).total();
    if (lanes < 1 || repeat < 1) fail("--lanes and --repeat must be at least 1");
    if (threads > 0) omp_set_num_threads(threads);
    const size_t n = values, block = 4096, k = sparse_k_for_density(density, block);
    std::printf("bench_boundary: %zu values (%.2f GB of fp32 per copy), sparse density %.3f (k = %zu of %zu), "
                "%d lanes, decay %.2f, %d OpenMP threads, %d repeats\n",
                n, n * 4.0 / 1e9, density, k, block, lanes, decay, omp_get_max_threads(), repeat);

    // The boundary's arrays: the round's average (params_ in OuterSync),
    // the round's pseudo-gradient (pseudo_), outer state, residual.
    std::vector<float> avg(n), delta(n), theta(n), residual(n), weights(n);
    fill(avg, 1, 1e-3);
    fill(delta, 2, 1e-3);
    fill(theta, 3, 2e-2);
    fill(residual, 4, 5e-4);
    fill(weights, 5, 2e-2);
    OuterOptimizer outer(n, 1.0, 0.0, false);  // sparse's default recipe: plain SGD
    outer.init(theta.data());
    ErrorFeedback ef(n, decay);
    // What this node sent: top-k of δ + r on each lane's segment, encoded
    // as the ring's lanes do (one thread each).
    std::vector<SparseSent> sent(lanes);
    {
      std::vector<std::thread> enc;
      for (int l = 0; l < lanes; ++l)
        enc.emplace_back([&, l] {
          const size_t begin = n * l / lanes, end = n * (l + 1) / lanes;
          SparseSent& s = sent[l];
          s.offset = begin;
          s.count = end - begin;
          s.block = block;
          s.k = k;
          s.encoded.resize(sparse_encoded_bytes(s.count, block, k));
          sparse_encode(delta.data() + begin, residual.data() + begin, s.count, block, k, s.encoded.data());
        });
      for (auto& t : enc) t.join();
    }
    size_t kept = 0;
    for (const SparseSent& s : sent) kept += (s.encoded.size() - (s.count + block - 1) / block * 8) / 2;
    std::printf("sent: %zu values kept (%.1f MB encoded)\n", kept, kept * 2.0 / 1e6);

    std::vector<double> t_commit, t_pass1, t_pass2, t_hash, t_rms;
    for (int r = 0; r < repeat; ++r) {
      // The same inputs each time: the residual as before the round.
      ef.set(residual);
      Clock::time_point t = Clock::now();
      ef.commit_sent(delta.data(), sent);
      t_commit.push_back(seconds_since(t));
      t = Clock::now();
      outer.apply_after_start(avg.data(), delta.data(), delta.data(), true);
      t_pass1.push_back(seconds_since(t));
      t = Clock::now();
      const uint64_t h = outer.params_hash();
      t_hash.push_back(seconds_since(t));
      t = Clock::now();
      outer.next_start(delta.data(), weights.data(), delta.data(), weights.data(), true);
      t_pass2.push_back(seconds_since(t));
      t = Clock::now();
      const double rms = ef.rms();
      t_rms.push_back(seconds_since(t));
      std::printf("run %d: commit %.3f s, pass 1 %.3f s, hash %.3f s, pass 2 %.3f s, rms %.3f s (rms %.3e, hash "
                  "%016llx)\n",
                  r + 1, t_commit.back(), t_pass1.back(), t_hash.back(), t_pass2.back(), t_rms.back(), rms,
                  static_cast<unsigned long long>(h));
      fill(delta, 2, 1e-3);  // pass 1 and 2 overwrote it
    }
    const double c = median(t_commit), p1 = median(t_pass1), p2 = median(t_pass2), hs = median(t_hash),
                 rm = median(t_rms);
    std::printf("median: error-feedback commit %.3f s | pass 1 (outer step) %.3f s | pass 2 (next start) %.3f s | "
                "hash %.3f s (its own thread) | rms %.3f s\n",
                c, p1, p2, hs, rm);
    std::printf("training thread, host work of a sparse boundary (commit + pass 1 + pass 2 + rms): %.3f s\n",
                c + p1 + p2 + rm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_boundary: %s\n", e.what());
    return 1;
  }
  return 0;
}
