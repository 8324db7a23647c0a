// A node's error-feedback buffer for sparse pseudo-gradients (SparseLoCo's
// accumulator, with no decay): what this node computed but did not send.
// Each round sends the top-k of (pseudo-gradient + residual) and keeps the
// rest, so over any number of rounds
//   Σ sent = Σ pseudo-gradients − residual        (up to fp32 rounding)
// and no progress is lost to sparsity, only delayed.
//
// Part of the node's state: checkpointed with the outer state
// (error_feedback.safetensors) and restored on resume, so a resumed node
// sends the same bytes. A node that joins a run, or takes the run's state
// afresh from a donor, starts with an empty (zero) buffer: the residual is
// the node's own unsent progress, relative to its own past; it is not
// in a donor's snapshot.
//
// Threads: owned by the training thread (OuterSync), which changes it only
// at an outer step's boundary (commit); a round in flight reads it
// (sparse_allgather's residual) and nothing writes it meanwhile.
#pragma once
#include <cstddef>
#include <span>
#include <vector>

#include "dist/sparse_allgather.h"

namespace intellect {

class ErrorFeedback {
 public:
  explicit ErrorFeedback(size_t n) : residual_(n, 0.0f) {}

  std::span<const float> residual() const { return residual_; }
  const std::vector<float>& values() const { return residual_; }
  // A checkpoint's buffer (size n), or zeros (a joiner, a fresh start).
  void set(std::vector<float> r);
  void reset();

  // After a round in which this node sent `sent` (its contributions, each
  // over a range of the buffer) for pseudo-gradient `delta`:
  //   residual = delta + residual − decode(sent)
  // over the ranges sent (the rest: delta + residual, nothing of it sent).
  void commit_sent(const float* delta, const std::vector<SparseSent>& sent);
  // Nothing of this round's pseudo-gradient was used (late for the ring,
  // the round's average from a donor): residual += delta.
  void commit_none(const float* delta);

  // Root mean square of the residual, for the metrics.
  double rms() const;

 private:
  std::vector<float> residual_;
};

}  // namespace intellect
