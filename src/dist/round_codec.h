// An outer step's averaged pseudo-gradient as a donor hands it to a joiner
// (or to a node that was late for the ring): exactly the bytes the ring
// carried in its all-gather, so the receiver decodes the same bytes every
// ring member decoded and applies a bit-identical outer step, at the ring's
// size: int8 about a quarter of fp32, int4 about 0.14, int2 (blocks2's
// selected blocks) about 0.078, sparse every node's
// contribution (N · ~2 bytes per kept value), summed in rank order and
// averaged as the all-gather did (diloco.sparse_aggregation: the kind says). Rounds that were not compressed (diloco.compression
// "none", or a ring of one) travel as fp32 pieces.
//
// Wire (little-endian): magic 'IRND', u8 version, u8 reserved (0), u16
// reserved (0), u64 total values, u32 pieces, u32 reserved (0); then each
// piece: u8 kind (0 fp32, 1 int8, 2 int4, 3 sparse, 4 sparse averaged per
// value over the contributions that kept it, 5 int2), 3 reserved bytes (0),
// u32 block (0 for fp32), u64 count; a sparse piece then u32 k, u32 world;
// then count float32, or codec_encoded_bytes(kind, count, block), or world
// contributions of sparse_encoded_bytes(count, block, k) in rank order.
// The pieces cover the values in order, exactly. Nothing is trusted: sizes
// are checked before any byte is read, every payload is validated (finite
// tables, scales and values; sparse indices in range and ascending) before
// anything is decoded.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dist/codec.h"
#include "util/byte_buffer.h"

namespace intellect {

struct RingCarried;  // ring_allreduce.h

class RoundEncoder {
 public:
  explicit RoundEncoder(size_t total_values);
  void add_fp32(std::span<const float> values);
  // `encoded` is int8_encoded_bytes(count, block) bytes from int8_encode.
  void add_int8(size_t count, size_t block, std::span<const uint8_t> encoded);
  // A chunk as a ring carried it (int8, int4, int2, or sparse with every rank's contribution).
  void add_carried(const RingCarried& c);
  // Room for `piece_bytes` bytes of pieces (round_piece_bytes summed), so
  // adding them never moves what was added before.
  void reserve(size_t piece_bytes);
  // Fails unless the pieces added cover exactly total_values.
  ByteBuffer finish();

 private:
  size_t total_, covered_ = 0;
  uint32_t pieces_ = 0;
  ByteBuffer body_;
};

// A dense ring's round, whose pieces are known before their bytes (every
// chunk's codec, count and block follows from the ring's cut:
// ring_chunk_counts, ring_allreduce.h). The buffer is allocated once, unzeroed, with the round's
// and every piece's header written here; each chunk's encoding is then
// copied straight into place by the codec thread that carried it. So the
// round is never assembled after the ring (a serial copy of the whole round,
// 0.22 s at 277M values on the H200 host) and no per-chunk copy is kept.
class PlannedRound {
 public:
  struct Piece {
    Compression compression;  // int8, int4 or int2
    size_t count, block;
  };
  // The pieces cover total_values in order.
  PlannedRound(size_t total_values, std::span<const Piece> pieces);
  size_t pieces() const { return payload_at_.size(); }
  // Where piece i's codec_encoded_bytes go. Any thread, each piece once.
  uint8_t* payload(size_t i) { return bytes_.data() + payload_at_[i]; }
  size_t payload_bytes(size_t i) const { return payload_bytes_[i]; }
  // The round, once every payload has been written.
  ByteBuffer finish() { return std::move(bytes_); }

 private:
  ByteBuffer bytes_;
  std::vector<size_t> payload_at_, payload_bytes_;
};

// What add_carried / add_fp32 append for a piece: its header and payload.
size_t round_piece_bytes(const RingCarried& c);
size_t round_fp32_piece_bytes(size_t count);

// The whole of `values` as one fp32 piece.
ByteBuffer encode_round_fp32(std::span<const float> values);

// Decodes a round into `out`, whose size must be the round's value count.
// `what` names the blob in errors. `out` is unspecified after a failure.
void decode_round(std::span<const uint8_t> blob, std::span<float> out, const std::string& what);

}  // namespace intellect
