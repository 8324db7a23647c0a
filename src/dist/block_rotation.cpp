#include "dist/block_rotation.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "dist/codec.h"
#include "util/error.h"
#include "util/rng.h"

namespace intellect {

size_t BlockSelection::len_of(uint32_t b) const { return std::min(block, n - begin_of(b)); }

void BlockSelection::gather(std::span<const float> a, std::span<const float> b, std::span<float> compact) const {
  INTELLECT_CHECK(a.size() == n && (b.empty() || b.size() == n) && compact.size() == values);
  // Where each selected block starts in the compact vector: a prefix sum,
  // so the blocks can be copied side by side.
  const int64_t nb = static_cast<int64_t>(blocks.size());
  std::vector<size_t> at(blocks.size());
  for (size_t i = 0, pos = 0; i < blocks.size(); ++i) {
    at[i] = pos;
    pos += len_of(blocks[i]);
  }
#pragma omp parallel for schedule(static) if (values > (size_t{1} << 16))
  for (int64_t i = 0; i < nb; ++i) {
    const size_t from = begin_of(blocks[i]), len = len_of(blocks[i]);
    float* out = compact.data() + at[i];
    if (b.empty()) std::copy(a.data() + from, a.data() + from + len, out);
    else
      for (size_t j = 0; j < len; ++j) out[j] = a[from + j] + b[from + j];
  }
}

std::vector<uint8_t> BlockSelection::chosen() const {
  std::vector<uint8_t> c(n == 0 ? 0 : (n + block - 1) / block, 0);
  for (uint32_t b : blocks) c[b] = 1;
  return c;
}

void BlockSelection::scatter(std::span<const float> compact, std::span<float> full) const {
  INTELLECT_CHECK(full.size() == n && compact.size() == values);
  const std::vector<uint8_t> chosen = this->chosen();
  std::vector<size_t> at(chosen.size(), 0);
  for (size_t i = 0, pos = 0; i < blocks.size(); ++i) {
    at[blocks[i]] = pos;
    pos += len_of(blocks[i]);
  }
  const int64_t total = static_cast<int64_t>(chosen.size());
#pragma omp parallel for schedule(static) if (n > (size_t{1} << 16))
  for (int64_t b = 0; b < total; ++b) {
    const size_t from = begin_of(static_cast<uint32_t>(b)), len = len_of(static_cast<uint32_t>(b));
    float* out = full.data() + from;
    if (chosen[b]) std::copy(compact.data() + at[b], compact.data() + at[b] + len, out);
    else std::fill(out, out + len, 0.0f);
  }
}

void keep_unsent_progress(const BlockSelection* sel, std::span<const float> theta, std::span<const float> delta,
                          std::span<float> weights) {
  const size_t n = weights.size();
  INTELLECT_CHECK(theta.size() == n && delta.size() == n && (!sel || sel->n == n));
  const size_t block = sel ? sel->block : kRotationBlock, blocks = (n + block - 1) / block;
  const std::vector<uint8_t> sent = sel ? sel->chosen() : std::vector<uint8_t>(blocks, 0);
  const int64_t nb = static_cast<int64_t>(blocks);
#pragma omp parallel for schedule(static) if (n > (size_t{1} << 16))
  for (int64_t b = 0; b < nb; ++b) {
    if (sent[b]) continue;
    const size_t from = static_cast<size_t>(b) * block, to = std::min(n, from + block);
    for (size_t i = from; i < to; ++i) weights[i] = theta[i] - delta[i];
  }
}

size_t rotation_period(double fraction) {
  if (!(fraction > 0.0 && fraction <= 1.0))
    fail("diloco.block_fraction is ", fraction, "; it must be in (0, 1] (the share of the blocks sent per round)");
  return static_cast<size_t>(std::ceil(1.0 / fraction - 1e-9));
}

BlockRotation::BlockRotation(size_t n, double fraction, uint64_t seed, int64_t final_round, size_t block)
    : n_(n), block_(block), blocks_(block ? (n + block - 1) / block : 0), period_(rotation_period(fraction)),
      seed_(seed), final_round_(final_round) {
  if (block == 0) fail("block rotation: block of 0 values (internal error)");
  if (blocks_ > UINT32_MAX) fail("block rotation: ", blocks_, " blocks do not fit the 32-bit block index");
  if (blocks_ < period_)
    fail("diloco.block_fraction ", fraction, " sends 1/", period_, " of the blocks per round, and the model has only ",
         blocks_, " blocks of ", block, " values: some rounds would send nothing; use a fraction of at least 1/",
         blocks_ == 0 ? 1 : blocks_);
}

BlockSelection BlockRotation::select(int64_t k) const {
  if (k < 1) fail("block rotation: outer step ", k, " (outer steps start at 1; internal error)");
  const uint64_t round = static_cast<uint64_t>(k - 1), cycle = round / period_, part = round % period_;
  // The cycle's permutation: Fisher-Yates on counter-based draws, so every
  // node (any standard library, any thread count) gets the same order.
  std::vector<uint32_t> perm(blocks_);
  std::iota(perm.begin(), perm.end(), 0u);
  const uint64_t stream = hash_u64(seed_ ^ 0x626c6f636b733421ull, cycle);  // "blocks4!"
  for (size_t i = blocks_; i > 1; --i) {
    const uint64_t r = hash_u64(stream, i);
    const size_t j = static_cast<size_t>((static_cast<unsigned __int128>(r) * i) >> 64);  // uniform in [0, i)
    std::swap(perm[i - 1], perm[j]);
  }
  BlockSelection s;
  s.n = n_;
  s.block = block_;
  if (k == final_round_) {
    s.blocks.resize(blocks_);
    std::iota(s.blocks.begin(), s.blocks.end(), 0u);
    s.values = n_;
    return s;
  }
  const size_t from = part * blocks_ / period_, to = (part + 1) * blocks_ / period_;
  s.blocks.assign(perm.begin() + static_cast<std::ptrdiff_t>(from), perm.begin() + static_cast<std::ptrdiff_t>(to));
  std::sort(s.blocks.begin(), s.blocks.end());
  for (uint32_t b : s.blocks) s.values += s.len_of(b);
  return s;
}

void rotation_prepare(const BlockSelection& sel, std::span<const float> delta, std::span<const float> residual,
                      std::span<float> compact, const BlockCodec& codec) {
  sel.gather(delta, residual, compact);
  // Pieces of whole codec groups, each encoded and decoded on its own: the
  // same groups (and so the same bits) as one pass from the start.
  constexpr size_t kPiece = size_t{1} << 16;
  INTELLECT_CHECK(codec.block() > 0 && kPiece % codec.block() == 0);
  const int64_t pieces = static_cast<int64_t>((sel.values + kPiece - 1) / kPiece);
  // An exception must not leave an OpenMP region: the first piece's error
  // (a non-finite value) is kept and thrown after it.
  std::vector<std::string> errors(static_cast<size_t>(pieces));
#pragma omp parallel
  {
    std::vector<uint8_t> enc(codec.encoded_bytes(kPiece));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < pieces; ++p) {
      float* x = compact.data() + static_cast<size_t>(p) * kPiece;
      const size_t len = std::min(kPiece, sel.values - static_cast<size_t>(p) * kPiece);
      try {
        codec.encode(x, len, enc.data(), "the pseudo-gradient's selected blocks (plus residual)");
        codec.decode(enc.data(), len, x);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(p)] = e.what();
      }
    }
  }
  for (const std::string& e : errors)
    if (!e.empty()) fail("blocks (", compression_name(codec.kind()), "): ", e);
}

}  // namespace intellect
