#include "dist/error_feedback.h"

#include <algorithm>
#include <cmath>

#include "dist/sparse.h"
#include "util/error.h"

namespace intellect {

ErrorFeedback::ErrorFeedback(size_t n, double decay) : residual_(n, 0.0f), decay_(static_cast<float>(decay)) {
  if (!(decay >= 0.0 && decay <= 1.0))
    fail("error-feedback decay is ", decay, "; it must be in [0, 1] (diloco.error_feedback_decay; 1: no decay)");
}

void ErrorFeedback::set(std::vector<float> r) {
  if (r.size() != residual_.size())
    fail("error-feedback buffer of ", r.size(), " values, the model has ", residual_.size(),
         " (a checkpoint of another model config)");
  for (size_t i = 0; i < r.size(); ++i)
    if (!std::isfinite(r[i])) fail("error-feedback buffer value ", i, " is not finite (a corrupt checkpoint)");
  residual_ = std::move(r);
}

void ErrorFeedback::reset() { std::fill(residual_.begin(), residual_.end(), 0.0f); }

void ErrorFeedback::commit_sent(const float* delta, const std::vector<SparseSent>& sent) {
  float* e = residual_.data();
  const size_t n = residual_.size();
#pragma omp parallel for simd schedule(static) if (n > (1u << 16))
  for (size_t i = 0; i < n; ++i) e[i] += delta[i];
  for (const SparseSent& s : sent) {
    INTELLECT_CHECK(s.offset + s.count <= n);
    INTELLECT_CHECK(s.encoded.size() == sparse_encoded_bytes(s.count, s.block, s.k));
    float* base = e + s.offset;
    sparse_for_each(s.encoded.data(), s.count, s.block, s.k, [&](size_t i, float v) { base[i] -= v; });
  }
  scale();
}

void ErrorFeedback::commit_none(const float* delta) {
  float* e = residual_.data();
  const size_t n = residual_.size();
#pragma omp parallel for simd schedule(static) if (n > (1u << 16))
  for (size_t i = 0; i < n; ++i) e[i] += delta[i];
  scale();
}

// After the subtraction, so the decay applies to what was left unsent
// (SparseLoCo's order: e ← β·e + Δ at the start of the next round).
// β = 1 skips the pass and leaves the buffer exactly as before the decay
// existed (old checkpoints and runs with decay 1 go on bit for bit).
void ErrorFeedback::scale() {
  if (decay_ == 1.0f) return;
  float* e = residual_.data();
  const size_t n = residual_.size();
  const float b = decay_;
#pragma omp parallel for simd schedule(static) if (n > (1u << 16))
  for (size_t i = 0; i < n; ++i) e[i] *= b;
}

double ErrorFeedback::rms() const {
  // On every core: one thread's serial double sum over the 150m model's
  // 277M values held an overlapped boundary 0.4-0.8 s (a metric, so the
  // order of the sum may vary with the thread count).
  double s = 0.0;
  const int64_t n = static_cast<int64_t>(residual_.size());
  const float* r = residual_.data();
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(r[i]) * r[i];
  return residual_.empty() ? 0.0 : std::sqrt(s / static_cast<double>(residual_.size()));
}

}  // namespace intellect
