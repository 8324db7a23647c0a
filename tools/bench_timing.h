// Timing for the host benchmarks (bench_evidence, bench_sparse_signing): the
// best of three runs of `repeat` calls, in microseconds per call. The best,
// not the mean, because these run on shared machines where other work only
// ever adds time.
#pragma once
#include <algorithm>
#include <chrono>

namespace intellect::bench {

template <class F>
double best_us(int repeat, F&& f) {
  using Clock = std::chrono::steady_clock;
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    const auto t0 = Clock::now();
    for (int i = 0; i < repeat; ++i) f();
    best = std::min(best, std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / repeat);
  }
  return best;
}

}  // namespace intellect::bench
