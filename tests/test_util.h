// Shared helpers for the tests: seeded random data, relative error, and a
// central-difference gradient check.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "util/rng.h"

#ifndef INTELLECT_SHARED_DATA
#define INTELLECT_SHARED_DATA "../shared/data"
#endif
#ifndef INTELLECT_BINARY_DIR
#define INTELLECT_BINARY_DIR "build"
#endif
#ifndef INTELLECT_SOURCE_DIR
#define INTELLECT_SOURCE_DIR "."
#endif

namespace intellect::test {

// Where the shared test data and the built tools are: the build's paths,
// unless the environment says otherwise (as on a machine the build was copied to).
inline std::string shared_data_dir() {
  const char* e = std::getenv("INTELLECT_SHARED_DATA");
  return e ? e : INTELLECT_SHARED_DATA;
}
inline std::string binary_dir() {
  const char* e = std::getenv("INTELLECT_BINARY_DIR");
  return e ? e : INTELLECT_BINARY_DIR;
}

// The message of the intellect::Error that f throws, or "<no error>".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

// Runs a shell command; returns its exit status and stdout+stderr.
struct CommandResult {
  int status;
  std::string output;
};
inline CommandResult run_command(const std::string& cmd) {
  CommandResult r{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Bytes from a seeded generator: frames and blobs whose corruption a test must notice.
inline std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>(normal01(seed, i));
  return v;
}

// One pseudo-gradient-sized vector per rank (values of about 1e-3, rank r
// seeded seed + stride·r): the inputs of the ring and evidence tests.
inline std::vector<std::vector<float>> rank_inputs(int n, size_t size, uint64_t seed, uint64_t stride = 17) {
  std::vector<std::vector<float>> v;
  for (int r = 0; r < n; ++r) v.push_back(randn(size, seed + stride * static_cast<uint64_t>(r), 1e-3f));
  return v;
}

// max |a−b| / max(max |b|, floor): one number for a whole tensor.
inline double rel_error(const float* a, const float* b, size_t n, double floor = 1e-6) {
  double diff = 0.0, ref = floor;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return INFINITY;  // NaN never passes
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::fabs(static_cast<double>(b[i])));
  }
  return diff / ref;
}
inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return rel_error(a.data(), b.data(), std::min(a.size(), b.size()));
}

// Compares analytic ∂L/∂x[i] with (L(x+h) − L(x−h)) / 2h at `samples` indices
// spread over x. `loss` must read x through the pointer it is given.
inline void expect_gradient(const std::string& what, std::vector<float>& x,
                            const std::vector<float>& analytic,
                            const std::function<double()>& loss, int samples = 24,
                            float h = 1e-2f, double tol = 2e-2) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  double max_g = 1e-3;
  for (float g : analytic) max_g = std::max(max_g, std::fabs(static_cast<double>(g)));
  const size_t n = x.size();
  const size_t count = std::min<size_t>(n, static_cast<size_t>(samples));
  for (size_t s = 0; s < count; ++s) {
    const size_t i = count == n ? s : static_cast<size_t>(hash_u64(0x5eed, s) % n);
    const float saved = x[i];
    x[i] = saved + h;
    const double lp = loss();
    x[i] = saved - h;
    const double lm = loss();
    x[i] = saved;
    const double numeric = (lp - lm) / (2.0 * h);
    EXPECT_NEAR(analytic[i], numeric, tol * max_g)
        << what << ": index " << i << " analytic " << analytic[i] << " numeric " << numeric;
  }
}

// cu_seqlens (as Batch::cu_seqlens) for documents of the given lengths laid
// end to end over B rows of T tokens and cut at every row start, as the
// loader packs them; whatever the lengths leave over is one more document.
inline std::vector<int32_t> pack_documents(int64_t B, int64_t T, const std::vector<int64_t>& lengths) {
  std::vector<int32_t> cu{0};
  int64_t doc_end = 0;
  size_t next = 0;
  for (int64_t i = 1; i <= B * T; ++i) {
    while (doc_end < i && next < lengths.size()) doc_end += lengths[next++];
    if (i == B * T || i % T == 0 || i == doc_end) cu.push_back(static_cast<int32_t>(i));
  }
  return cu;
}

// Document lengths drawn uniformly from [1, max_len], enough to cover n tokens.
inline std::vector<int64_t> random_lengths(int64_t n, int64_t max_len, uint64_t seed) {
  std::vector<int64_t> v;
  for (int64_t total = 0, i = 0; total < n; ++i) {
    v.push_back(1 + static_cast<int64_t>(hash_u64(seed, static_cast<uint64_t>(i)) % max_len));
    total += v.back();
  }
  return v;
}

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

}  // namespace intellect::test
