#include "dist/error_feedback.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dist/sparse.h"
#include "util/error.h"

namespace intellect {

namespace {

// A commit's unit of work: [begin, begin + len) of the buffer, and the
// sparse block this node sent over exactly that range (null: nothing sent).
// A sparse block is at most 4096 values and its decode touches only its
// own range, so pieces are independent and the commit runs one per task.
struct Piece {
  size_t begin = 0, len = 0;
  const uint8_t* block = nullptr;
  size_t kept = 0;
  const float* dense = nullptr;  // blocks4: the values sent over exactly this range
  bool untouched = false;        // blocks4: a block not sent: left as it is (only its Σ e² taken)
};

constexpr size_t kGapPiece = size_t{1} << 16;  // values of a piece nothing was sent over

void add_gap(std::vector<Piece>& pieces, size_t begin, size_t end) {
  for (size_t b = begin; b < end; b += kGapPiece) pieces.push_back({b, std::min(kGapPiece, end - b), nullptr, 0});
}

// The buffer [0, n) cut into pieces in ascending order: each sent block
// one piece, the ranges between contributions in gap pieces.
std::vector<Piece> pieces_of(size_t n, const std::vector<SparseSent>& sent) {
  std::vector<const SparseSent*> order;
  for (const SparseSent& s : sent) order.push_back(&s);
  std::sort(order.begin(), order.end(), [](const SparseSent* a, const SparseSent* b) { return a->offset < b->offset; });
  std::vector<Piece> pieces;
  size_t at = 0;
  for (const SparseSent* s : order) {
    INTELLECT_CHECK(s->offset + s->count <= n);
    INTELLECT_CHECK(s->offset >= at);  // contributions are disjoint (one per lane)
    INTELLECT_CHECK(s->block > 0 && s->encoded.size() == sparse_encoded_bytes(s->count, s->block, s->k));
    add_gap(pieces, at, s->offset);
    const size_t full_bytes = sparse_encoded_bytes(s->block, s->block, s->k);
    for (size_t b = 0, begin = 0; begin < s->count; ++b, begin += s->block) {
      const size_t len = std::min(s->block, s->count - begin);
      pieces.push_back({s->offset + begin, len, s->encoded.data() + b * full_bytes, sparse_kept(len, s->block, s->k)});
    }
    at = s->offset + s->count;
  }
  add_gap(pieces, at, n);
  return pieces;
}

// blocks4: each selected block one piece (what was sent of it: its part of
// the compact vector), the unselected runs between them untouched pieces.
void add_untouched(std::vector<Piece>& pieces, size_t begin, size_t end) {
  const size_t from = pieces.size();
  add_gap(pieces, begin, end);
  for (size_t i = from; i < pieces.size(); ++i) pieces[i].untouched = true;
}

std::vector<Piece> pieces_of(const BlockSelection& sel, const float* sent) {
  std::vector<Piece> pieces;
  size_t at = 0, pos = 0;
  for (uint32_t b : sel.blocks) {
    const size_t begin = sel.begin_of(b), len = sel.len_of(b);
    INTELLECT_CHECK(begin >= at && begin + len <= sel.n);  // ascending, disjoint
    add_untouched(pieces, at, begin);
    Piece pc;
    pc.begin = begin;
    pc.len = len;
    pc.dense = sent + pos;
    pieces.push_back(pc);
    pos += len;
    at = begin + len;
  }
  INTELLECT_CHECK(pos == sel.values);
  add_untouched(pieces, at, sel.n);
  return pieces;
}

// Σ over the pieces' sums, in piece order: the same double on any thread count.
double sum_in_order(const std::vector<double>& parts) {
  double s = 0.0;
  for (double p : parts) s += p;
  return s;
}

// Σ x² of one piece in double, in a fixed order: eight running sums (value
// i into sum i mod 8, which the compiler can keep in vector registers; one
// running sum is a chain of dependent adds, 4 cycles a value), then added
// up in order. kScale: x *= b first, in the same pass.
template <bool kScale>
double piece_sum_sq(float* x, size_t len, float b) {
  double acc[8] = {};
  size_t i = 0;
  for (; i + 8 <= len; i += 8)
    for (size_t j = 0; j < 8; ++j) {
      if constexpr (kScale) x[i + j] *= b;
      const double v = x[i + j];
      acc[j] += v * v;
    }
  for (; i < len; ++i) {
    if constexpr (kScale) x[i] *= b;
    const double v = x[i];
    acc[i % 8] += v * v;
  }
  double s = 0.0;
  for (double a : acc) s += a;
  return s;
}

// Per piece: e + δ, minus what was sent of it, times β; returns Σ e² over
// the buffer (summed per piece, then in piece order).
double commit_pieces(float* residual, size_t n, const float* delta, const std::vector<Piece>& pieces, float b) {
  std::vector<double> sq(pieces.size());
  const bool decays = b != 1.0f;
  const int64_t np = static_cast<int64_t>(pieces.size());
  // Dynamic: a sent block decodes, a gap piece does not (16× longer, though).
#pragma omp parallel for schedule(dynamic, 16) if (n > (size_t{1} << 16))
  for (int64_t p = 0; p < np; ++p) {
    const Piece& pc = pieces[p];
    float* e = residual + pc.begin;
    if (pc.untouched) {
      sq[p] = piece_sum_sq<false>(e, pc.len, 1.0f);
      continue;
    }
    const float* d = delta + pc.begin;
#pragma omp simd
    for (size_t i = 0; i < pc.len; ++i) e[i] += d[i];
    if (pc.block) sparse_block_for_each(pc.block, pc.kept, [e](size_t i, float v) { e[i] -= v; });
    if (pc.dense) {
      const float* q = pc.dense;
#pragma omp simd
      for (size_t i = 0; i < pc.len; ++i) e[i] -= q[i];
    }
    sq[p] = decays ? piece_sum_sq<true>(e, pc.len, b) : piece_sum_sq<false>(e, pc.len, b);
  }
  return sum_in_order(sq);
}

}  // namespace

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
  const std::vector<Piece> pieces = pieces_of(residual_.size(), {});
  std::vector<double> sq(pieces.size());
  const int64_t np = static_cast<int64_t>(pieces.size());
#pragma omp parallel for schedule(static) if (np > 1)
  for (int64_t p = 0; p < np; ++p) sq[p] = piece_sum_sq<false>(residual_.data() + pieces[p].begin, pieces[p].len, 1.0f);
  sum_sq_ = sum_in_order(sq);
}

void ErrorFeedback::reset() {
  std::fill(residual_.begin(), residual_.end(), 0.0f);
  sum_sq_ = 0.0;
}

// Per value, in this order: e + δ, minus what was sent of it, times β
// (SparseLoCo's: the decay applies to what was left unsent, e ← β·e + Δ
// at the start of the next round). β = 1 skips the multiply and leaves
// the buffer exactly as before the decay existed (old checkpoints and
// runs with decay 1 go on bit for bit). One piece at a time while it is
// in cache; before, the add, the serial decode of the 8.3M values sent
// (150m, 3%) and the decay were three passes, 0.25-0.57 s of an
// overlapped boundary on the H200 host.
void ErrorFeedback::commit_sent(const float* delta, const std::vector<SparseSent>& sent) {
  sum_sq_ = commit_pieces(residual_.data(), residual_.size(), delta, pieces_of(residual_.size(), sent), decay_);
}

void ErrorFeedback::commit_blocks(const float* delta, const BlockSelection& sel, std::span<const float> sent) {
  if (sel.n != residual_.size() || sent.size() != sel.values)
    fail("error feedback: a block selection over ", sel.n, " values (", sent.size(), " sent) for a buffer of ",
         residual_.size(), " (internal error)");
  sum_sq_ = commit_pieces(residual_.data(), residual_.size(), delta, pieces_of(sel, sent.data()), decay_);
}

void ErrorFeedback::commit_none(const float* delta) { commit_sent(delta, {}); }

double ErrorFeedback::rms() const {
  return residual_.empty() ? 0.0 : std::sqrt(sum_sq_ / static_cast<double>(residual_.size()));
}

}  // namespace intellect
