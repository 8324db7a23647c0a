// bench_quantize: throughput of the pseudo-gradient codecs in GB/s of fp32
// values: int8 (encode, decode, decode-and-add; sum of squares on one) at 1 and N threads, then int4,
// int2 and sparse top-k (issue 18) on one core, as the ring runs them, with their
// bytes per value and relative RMS error; and int8's
// relative RMS error on pseudo-gradient-like data (Gaussian with 0.1% outliers
// twenty times larger), next to the ±3σ clipped range INTELLECT-1 used
// (hivemind's Uniform8BitQuantization) as the yardstick for our choice of
// [min, max] per block.
//
//   bench_quantize [--values N] [--block B] [--threads T] [--repeat R]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dist/quantize.h"
#include "dist/quantize2.h"
#include "dist/quantize4.h"
#include "dist/sparse.h"
#include "util/error.h"
#include "util/rng.h"

namespace {

constexpr const char* kUsage =
    "usage: bench_quantize [--values N] [--block B] [--threads T] [--repeat R]\n"
    "  --values N   fp32 values to encode (default 67108864 = 256 MiB)\n"
    "  --block B    values per quantization table (default 65536)\n"
    "  --threads T  the multi-threaded runs' thread count (default 0 = all cores)\n"
    "  --repeat R   runs per measurement; the best is reported (default 3)\n";

// The σ-based alternative, for comparison only: bins span mean ± 3σ of the
// block, values beyond are clipped into the edge bins, bins decode to means.
void sigma_round_trip(const float* x, size_t n, float* y) {
  double mean = 0.0, var = 0.0;
  for (size_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  for (size_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const double sd = std::sqrt(var / static_cast<double>(n > 1 ? n - 1 : 1));
  const double scale = sd > 0 ? 6.0 * sd / 256.0 : 1.0;
  std::vector<double> sum(256, 0.0);
  std::vector<size_t> cnt(256, 0);
  std::vector<uint8_t> code(n);
  for (size_t i = 0; i < n; ++i) {
    const double q = std::nearbyint((x[i] - mean) / scale) + 128.0;
    code[i] = static_cast<uint8_t>(std::clamp(q, 0.0, 255.0));
    sum[code[i]] += x[i];
    cnt[code[i]] += 1;
  }
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<float>(sum[code[i]] / static_cast<double>(cnt[code[i]]));
}

// 2-bit alternatives to int2's grid, for comparison only (quantize2.h says
// why it is the Lloyd-Max one): per group of 64, an absmax-scaled uniform
// grid {±1/3, ±1}·max|x|, and a ternary grid {0, ±1.224σ} (Lloyd-Max's
// 3 levels for a Gaussian, threshold 0.612σ).
void int2_alternative_round_trip(bool ternary, const float* x, size_t n, float* y) {
  for (size_t b = 0; b < n; b += 64) {
    const size_t len = std::min<size_t>(64, n - b);
    double amax = 0.0, ss = 0.0;
    for (size_t i = b; i < b + len; ++i) {
      amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
      ss += static_cast<double>(x[i]) * x[i];
    }
    const double sd = std::sqrt(ss / static_cast<double>(len));
    for (size_t i = b; i < b + len; ++i) {
      const double a = std::fabs(static_cast<double>(x[i]));
      const double v = ternary ? (a > 0.612 * sd ? 1.224 * sd : 0.0) : (a > 2.0 * amax / 3.0 ? amax : amax / 3.0);
      y[i] = static_cast<float>(x[i] < 0 ? -v : v);
    }
  }
}

// Relative MSE ‖x − x̂‖²/‖x‖² of int2 and the two alternatives on Gaussian,
// Laplace and Student-t (3 degrees of freedom) values.
void compare_int2_grids(size_t n) {
  std::vector<float> x(n), y(n);
  auto rel_mse = [&] {
    double e = 0.0, r = 0.0;
    for (size_t i = 0; i < n; ++i) {
      e += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
      r += static_cast<double>(x[i]) * x[i];
    }
    return e / r;
  };
  std::vector<uint8_t> enc(intellect::int2_encoded_bytes(n, 64));
  for (int dist = 0; dist < 3; ++dist) {
    for (size_t i = 0; i < n; ++i) {
      if (dist == 0) x[i] = static_cast<float>(intellect::normal01(7, i));
      if (dist == 1) {
        const double u = intellect::uniform01(8, i);
        x[i] = static_cast<float>(u < 0.5 ? std::log(2.0 * u + 1e-300) : -std::log(2.0 * (1.0 - u) + 1e-300));
      }
      if (dist == 2) {
        double chi = 0.0;
        for (uint64_t k = 0; k < 3; ++k) chi += std::pow(intellect::normal01(10 + k, i), 2);
        x[i] = static_cast<float>(intellect::normal01(9, i) / std::sqrt(chi / 3.0));
      }
    }
    intellect::int2_encode(x.data(), n, 64, enc.data());
    intellect::int2_decode(enc.data(), n, 64, y.data());
    const double ours = rel_mse();
    int2_alternative_round_trip(false, x.data(), n, y.data());
    const double absmax = rel_mse();
    int2_alternative_round_trip(true, x.data(), n, y.data());
    const double ternary = rel_mse();
    std::printf("2-bit grids, groups of 64, %-13s relative MSE: int2 (Lloyd-Max, LS scale) %.3f  absmax {±1/3,±1} "
                "%.3f  ternary {0,±1.224σ} %.3f\n", dist == 0 ? "Gaussian:" : dist == 1 ? "Laplace:" : "Student-t(3):",
                ours, absmax, ternary);
  }
}

void report_error(const char* name, const std::vector<float>& x, const std::vector<float>& y) {
  double err2 = 0.0, ref2 = 0.0, worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(y[i]) - x[i];
    err2 += d * d;
    ref2 += static_cast<double>(x[i]) * x[i];
    worst = std::max(worst, std::fabs(d));
  }
  std::printf("%-37s relative RMS error %.3e, max abs error %.3e (data RMS %.3e)\n", name,
              std::sqrt(err2 / ref2), worst, std::sqrt(ref2 / static_cast<double>(x.size())));
}

template <class F>
double best_seconds(int repeat, F&& f) {
  double best = 1e30;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

size_t parse_size(const char* flag, const char* v) {
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (!*v || *end || x < 0) intellect::fail(flag, " needs a non-negative integer, got \"", v, "\"\n", kUsage);
  return static_cast<size_t>(x);
}

}  // namespace

int main(int argc, char** argv) try {
  size_t n = size_t{1} << 26, block = size_t{1} << 16, threads = 0, repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) intellect::fail("missing value after ", a, "\n", kUsage);
    const char* v = argv[++i];
    if (a == "--values") n = parse_size("--values", v);
    else if (a == "--block") block = parse_size("--block", v);
    else if (a == "--threads") threads = parse_size("--threads", v);
    else if (a == "--repeat") repeat = parse_size("--repeat", v);
    else intellect::fail("unknown option ", a, "\n", kUsage);
  }
  if (block == 0 || repeat == 0) intellect::fail("--block and --repeat must be positive\n", kUsage);
  const int nt = threads ? static_cast<int>(threads) : omp_get_max_threads();

  std::vector<float> x(n);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const double outlier = intellect::uniform01(7, i) < 1e-3 ? 20.0 : 1.0;
    x[i] = static_cast<float>(1e-3 * outlier * intellect::normal01(42, i));
  }
  std::vector<uint8_t> enc(intellect::int8_encoded_bytes(n, block));
  std::vector<float> y(n, 0.0f);
  const double gb = static_cast<double>(n) * sizeof(float) / 1e9;

  std::printf("int8 codec: %zu values (%.0f MiB fp32), block %zu, encoded %.1f MiB (%.2f bytes/value)\n", n,
              n * 4.0 / 1048576.0, block, enc.size() / 1048576.0, static_cast<double>(enc.size()) / n);
  for (int t : {1, nt}) {
    omp_set_num_threads(t);
    const double te = best_seconds(repeat, [&] { intellect::int8_encode(x.data(), n, block, enc.data()); });
    const double td = best_seconds(repeat, [&] { intellect::int8_decode(enc.data(), n, block, y.data()); });
    const double ta = best_seconds(repeat, [&] { intellect::int8_decode_add(enc.data(), n, block, y.data()); });
    // The ring successor's norm check on every message (one thread: it is not parallel).
    volatile double sink = 0.0;
    const double ts = best_seconds(repeat, [&] { sink = intellect::int8_sum_squares(enc.data(), n, block); });
    (void)sink;
    std::printf("threads %2d: encode %6.2f GB/s  decode %6.2f GB/s  decode+add %6.2f GB/s  sum_squares %6.2f GB/s\n",
                t, gb / te, gb / td, gb / ta, gb / ts);
    if (t == 1) {
      // A ring hop's passes as LaneRun runs them (one thread): the all-gather's
      // decode with the sum of squares, and the reduce-scatter's decode added
      // to the input with the sum of squares and the finiteness test.
      double ss = 0.0;
      const double tg = best_seconds(repeat, [&] {
        intellect::int8_decode_fused(enc.data(), n, block, nullptr, y.data(), &ss);
      });
      const double tr = best_seconds(repeat, [&] {
        sink = intellect::int8_decode_fused(enc.data(), n, block, x.data(), y.data(), &ss);
      });
      std::printf("threads  1: a ring hop's fused decode: all-gather (decode, sum of squares) %6.2f GB/s  "
                  "reduce-scatter (+ input, finiteness) %6.2f GB/s\n", gb / tg, gb / tr);
    }
    if (t == nt) break;
  }

  // The direct pattern's owner with 4 members: 3 contributions added onto
  // its own and divided, chunk by chunk (a message's 2^20 values), as
  // separate passes (decode_fused per contribution, then a division: the
  // build before average_fused) and as one. On T threads the chunks run side
  // by side, as several nodes' codec threads share a host's memory: where
  // that bandwidth binds, the one pass's fewer reads and writes show.
  {
    const size_t chunk = block * std::max<size_t>(1, (size_t{1} << 20) / block), chunks = n / chunk;
    if (chunks > 0) {
      for (int t : {1, nt}) {
        omp_set_num_threads(t);
        const double ts = best_seconds(repeat, [&] {
#pragma omp parallel for schedule(static)
          for (size_t c = 0; c < chunks; ++c) {
            const uint8_t* p = enc.data() + intellect::int8_encoded_bytes(c * chunk, block);
            float* out = y.data() + c * chunk;
            double ss = 0.0;
            intellect::int8_decode_fused(p, chunk, block, x.data() + c * chunk, out, &ss);
            intellect::int8_decode_fused(p, chunk, block, out, out, &ss);
            intellect::int8_decode_fused(p, chunk, block, out, out, &ss);
            for (size_t i = 0; i < chunk; ++i) out[i] /= 4.0f;
          }
        });
        const double tf = best_seconds(repeat, [&] {
#pragma omp parallel for schedule(static)
          for (size_t c = 0; c < chunks; ++c) {
            const uint8_t* p = enc.data() + intellect::int8_encoded_bytes(c * chunk, block);
            const uint8_t* three[3] = {p, p, p};
            double ss[3];
            intellect::int8_average_fused(three, 3, chunk, block, x.data() + c * chunk, y.data() + c * chunk, 4.0f, ss);
          }
        });
        const double g = static_cast<double>(chunks * chunk) * sizeof(float) / 1e9;
        std::printf("threads %2d: a direct owner's average of 3 contributions (GB/s of fp32 out): separate passes "
                    "%6.2f  one pass %6.2f\n", t, g / ts, g / tf);
        if (t == nt) break;
      }
    }
  }

  // int4 and sparse, one core: the ring calls them from one thread per lane.
  omp_set_num_threads(1);
  {
    const size_t g = intellect::kInt4DefaultGroup;
    std::vector<uint8_t> e4(intellect::int4_encoded_bytes(n, g));
    const double te = best_seconds(repeat, [&] { intellect::int4_encode(x.data(), n, g, e4.data()); });
    const double td = best_seconds(repeat, [&] { intellect::int4_decode(e4.data(), n, g, y.data()); });
    const double ta = best_seconds(repeat, [&] { intellect::int4_decode_add(e4.data(), n, g, y.data()); });
    std::printf("int4 (group %zu, %.3f bytes/value), 1 thread: encode %6.2f GB/s  decode %6.2f GB/s  decode+add "
                "%6.2f GB/s\n", g, static_cast<double>(e4.size()) / n, gb / te, gb / td, gb / ta);
    intellect::int4_decode(e4.data(), n, g, y.data());
    report_error("int4, 0.1% outliers x20:", x, y);
  }
  {  // int2 (blocks2's ring codec), the same way
    const size_t g = intellect::kInt2DefaultGroup;
    std::vector<uint8_t> e2(intellect::int2_encoded_bytes(n, g));
    const double te = best_seconds(repeat, [&] { intellect::int2_encode(x.data(), n, g, e2.data()); });
    const double tv = best_seconds(repeat, [&] { intellect::int2_validate(e2.data(), n, g, "bench"); });
    const double td = best_seconds(repeat, [&] { intellect::int2_decode(e2.data(), n, g, y.data()); });
    const double ta = best_seconds(repeat, [&] { intellect::int2_decode_add(e2.data(), n, g, y.data()); });
    std::printf("int2 (group %zu, %.3f bytes/value), 1 thread: encode %6.2f GB/s  validate %6.2f GB/s  decode %6.2f "
                "GB/s  decode+add %6.2f GB/s\n", g, static_cast<double>(e2.size()) / n, gb / te, gb / tv, gb / td,
                gb / ta);
    intellect::int2_decode(e2.data(), n, g, y.data());
    report_error("int2, 0.1% outliers x20:", x, y);
    compare_int2_grids(std::min<size_t>(n, size_t{1} << 20));
  }
  for (double density : {0.01, 0.03}) {
    const size_t b = intellect::kSparseMaxBlock, k = intellect::sparse_k_for_density(density, b);
    std::vector<uint8_t> es(intellect::sparse_encoded_bytes(n, b, k));
    const double te = best_seconds(repeat, [&] { intellect::sparse_encode(x.data(), nullptr, n, b, k, es.data()); });
    const double ta = best_seconds(repeat, [&] { intellect::sparse_decode_add(es.data(), n, b, k, y.data()); });
    const double tv = best_seconds(repeat, [&] { intellect::sparse_validate(es.data(), n, b, k, "bench"); });
    std::printf("sparse %.0f%% (k %zu of %zu, %.4f bytes/value), 1 thread: encode %6.2f GB/s  validate %6.2f GB/s  "
                "decode+add %6.2f GB/s\n", density * 100, k, b, static_cast<double>(es.size()) / n, gb / te, gb / tv,
                gb / ta);
  }
  omp_set_num_threads(nt);

  for (bool outliers : {true, false}) {
    if (!outliers)
      for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(1e-3 * intellect::normal01(42, i));
    intellect::int8_encode(x.data(), n, block, enc.data());
    intellect::int8_decode(enc.data(), n, block, y.data());
    report_error(outliers ? "ours [min,max], 0.1% outliers x20:" : "ours [min,max], Gaussian:", x, y);
    for (size_t b = 0; b < n; b += block) sigma_round_trip(x.data() + b, std::min(block, n - b), y.data() + b);
    report_error(outliers ? "mean+-3sd clipped, 0.1% outliers x20:" : "mean+-3sd clipped, Gaussian:", x, y);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_quantize: %s\n", e.what());
  return 1;
}
