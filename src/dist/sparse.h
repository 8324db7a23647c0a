// Sparse codec for pseudo-gradients (diloco.compression "sparse", after
// SparseLoCo): in each block of up to 4096 values only the k of largest
// magnitude are sent, each as one 16-bit entry: a 12-bit index within the
// block and a 4-bit code (sign and 3 bits of magnitude on a uniform grid
// between the block's smallest and largest kept magnitude, both sent as
// float32). What is not sent stays in the node's error-feedback buffer
// (error_feedback.h) and goes out in a later round.
//
// Why this layout: a fixed k per block makes every encoding's size a
// function of (values, block, k) alone, so a receiver checks a message's
// size before reading it, as the ring does. 12 + 4 bits pack into one u16,
// with no bit stream to get wrong; sorted indices are checked strictly
// ascending, so no index repeats or runs past the block. A delta code
// would save ~4 of the 12 index bits at 1% density but gives variable
// sizes; at 1% a block costs 8 + 2·41 bytes for 16 KiB of fp32 (0.55%).
//
// Kept per block: k for a full block, ceil(k·n / block) for a last block
// of n values. Selection is deterministic: by magnitude, ties to the lower
// index. Encoded block: f32 lo, f32 hi (0 ≤ lo ≤ hi ≤ FLT_MAX / 2), then
// kept × u16 (index << 4 | sign << 3 | m), decoding to ±(lo + m·(hi − lo)/7).
// Nothing from a peer is trusted: sparse_validate checks every block before
// any decode writes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace intellect {

constexpr size_t kSparseMaxBlock = 4096;  // 12-bit indices
constexpr size_t kSparseBlockHeader = 8;  // lo, hi

// Values kept for a density in (0, 1]: round(density · block), at least 1.
size_t sparse_k_for_density(double density, size_t block);
// Values kept in a block of n ≤ block values.
size_t sparse_kept(size_t n, size_t block, size_t k);
// Bytes of n values in blocks of `block` keeping k per full block.
size_t sparse_encoded_bytes(size_t n, size_t block, size_t k);
// Checks (block, k) can be encoded: 1 ≤ block ≤ 4096, 1 ≤ k ≤ block.
void sparse_check_params(size_t block, size_t k, const char* what);

// Encodes x + add (add may be null: x alone), n values. `out` holds
// sparse_encoded_bytes(n, block, k). Throws Error naming `what` on a
// non-finite or absurdly large (> FLT_MAX / 2) value.
void sparse_encode(const float* x, const float* add, size_t n, size_t block, size_t k, uint8_t* out,
                   const char* what = "values");
// Bytes from a peer: throws Error naming `what` unless every block's range
// and indices are valid (then decoding writes only inside [0, n)).
void sparse_validate(const uint8_t* in, size_t n, size_t block, size_t k, const char* what);
// acc[i] += decoded value i for the kept values (others are zero).
void sparse_decode_add(const uint8_t* in, size_t n, size_t block, size_t k, float* acc);
// Calls f(i, decoded value) for each kept value, in ascending i.
template <class F>
void sparse_for_each(const uint8_t* in, size_t n, size_t block, size_t k, F&& f);
// One encoded block alone (its `kept` entries; i within the block): blocks
// are independent, so a caller may decode them on several threads. Block b
// of an encoding starts at b · sparse_encoded_bytes(block, block, k).
template <class F>
void sparse_block_for_each(const uint8_t* in, size_t kept, F&& f);

// How `world` sparse contributions become one update
// (diloco.sparse_aggregation; docs/ARCHITECTURE.md, "What SparseLoCo does"):
//  - Mean: Σ_r decoded_r / world for every value (SparseLoCo's equation,
//    Δ = (1/R) Σ_r Δ̂_r): a value one node of four kept moves by a quarter
//    of it.
//  - Contributors: per value, the mean over the contributions that kept it
//    (Σ_r decoded_r / #{r that kept it}; 0 where none did): what
//    SparseLoCo's and Templar's code compute (scatter_reduce "mean" over
//    the gathered indices). A value some nodes kept moves by their mean;
//    where every node kept it, the same as Mean.
enum class SparseAggregation : uint8_t { Mean = 0, Contributors = 1 };
// "mean" | "contributors"; anything else is an Error naming both.
SparseAggregation parse_sparse_aggregation(const std::string& s);
const char* sparse_aggregation_name(SparseAggregation a);

// The average of `world` contributions (each sparse_encoded_bytes(n, block,
// k), back to back in rank order at `in`), by `agg`, summed in rank order
// (and counted, for Contributors), so every node that holds the same bytes
// gets the same bits. Validate first when the bytes came from the network.
void sparse_average(const uint8_t* in, size_t world, size_t n, size_t block, size_t k, float* out,
                    SparseAggregation agg = SparseAggregation::Mean);

// --- implementation of the template ------------------------------------------
float sparse_block_step(float lo, float hi);
template <class F>
void sparse_block_for_each(const uint8_t* in, size_t kept, F&& f) {
  float lo, hi;
  __builtin_memcpy(&lo, in, 4);
  __builtin_memcpy(&hi, in + 4, 4);
  const float step = sparse_block_step(lo, hi);
  const uint8_t* e = in + kSparseBlockHeader;
  for (size_t j = 0; j < kept; ++j) {
    const uint16_t v = static_cast<uint16_t>(e[2 * j] | (e[2 * j + 1] << 8));
    const float mag = lo + static_cast<float>(v & 7u) * step;
    f(static_cast<size_t>(v >> 4), (v & 8u) ? -mag : mag);
  }
}

template <class F>
void sparse_for_each(const uint8_t* in, size_t n, size_t block, size_t k, F&& f) {
  for (size_t begin = 0; begin < n; begin += block) {
    const size_t len = n - begin < block ? n - begin : block;
    const size_t kept = sparse_kept(len, block, k);
    sparse_block_for_each(in, kept, [&](size_t i, float v) { f(begin + i, v); });
    in += kSparseBlockHeader + 2 * kept;
  }
}

}  // namespace intellect
