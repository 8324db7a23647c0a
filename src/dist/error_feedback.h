// A node's error-feedback buffer for sparse and blocks4 pseudo-gradients
// (SparseLoCo's accumulator): what this node computed but did not send, decayed by β
// (diloco.error_feedback_decay) each round. SparseLoCo (Sarfi et al. 2025,
// arXiv 2508.15706, Algorithm 1) runs, per node r and round t,
//   e ← β·e + Δ_t;  sent_t = Q(TopK(e));  e ← e − sent_t
// and drops DiLoCo's outer momentum: the decayed accumulator plays its part
// (docs/ARCHITECTURE.md, "What SparseLoCo does"). The buffer held here is
// the one the next round adds to its pseudo-gradient, so it is stored
// already decayed: r = β·e after each commit, and a round encodes Δ + r.
// That keeps the ring code unaware of β. Over rounds 1..T
//   e_T = Σ_t β^(T−t) (Δ_t − sent_t),   r_T = β·e_T   (up to fp32 rounding)
// and with β = 1 (no decay) Σ sent = Σ pseudo-gradients − residual: no
// progress is lost to sparsity, only delayed. With β < 1 what waits too
// long fades (by β per round), which is what keeps stale values from
// piling up into the momentum-like overshoot of an undecayed buffer.
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
// (sparse_allgather's residual) and nothing writes it meanwhile. A commit
// runs on the caller's OpenMP team, one piece of the buffer per task (a
// sparse block sent, or up to 64K values nothing was sent over); each
// value's arithmetic is the same whatever the thread count, so the buffer
// is the same bits on 1 thread or 64, and so is rms() (summed per piece,
// then over the pieces in order).
#pragma once
#include <cstddef>
#include <span>
#include <vector>

#include "dist/block_rotation.h"
#include "dist/sparse_allgather.h"

namespace intellect {

class ErrorFeedback {
 public:
  // `decay` is β in [0, 1] (diloco.error_feedback_decay; 1: none).
  explicit ErrorFeedback(size_t n, double decay = 1.0);

  double decay() const { return decay_; }

  std::span<const float> residual() const { return residual_; }
  const std::vector<float>& values() const { return residual_; }
  // A checkpoint's buffer (size n), or zeros (a joiner, a fresh start).
  void set(std::vector<float> r);
  void reset();

  // After a round in which this node sent `sent` (its contributions, each
  // over a range of the buffer, no two overlapping: one per ring lane) for
  // pseudo-gradient `delta`:
  //   residual = β·(delta + residual − decode(sent))
  // over the ranges sent (the rest: β·(delta + residual), nothing of it sent).
  // One pass over the buffer, which also takes the sum of squares rms() reports.
  void commit_sent(const float* delta, const std::vector<SparseSent>& sent);
  // Nothing of this round's pseudo-gradient was used (late for the ring,
  // the round's average from a donor): residual = β·(residual + delta).
  void commit_none(const float* delta);
  // blocks4: this node sent `sent` (the compact vector, already through
  // int4) over the blocks of `sel`:
  //   residual = β·(delta + residual − sent)   on the selected blocks,
  //   residual unchanged                       on the others:
  // their progress stays in the node's weights, which blocks4's outer step
  // does not reset there (dist/block_rotation.h), so the next δ still holds it.
  void commit_blocks(const float* delta, const BlockSelection& sel, std::span<const float> sent);

  // Root mean square of the residual, for the metrics: taken by the pass
  // that last changed the buffer, so asking costs nothing.
  double rms() const;

 private:
  std::vector<float> residual_;
  float decay_;       // applied as float, once per value per round
  double sum_sq_ = 0;  // Σ residual², kept by every change
};

}  // namespace intellect
