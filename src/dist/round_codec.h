// An outer step's averaged pseudo-gradient as a donor hands it to a joiner
// (or to a node that was late for the ring): exactly the bytes the int8 ring
// carried in its all-gather, so the receiver decodes the same table entries
// every ring member decoded and applies a bit-identical outer step, at about
// a quarter of the fp32 size (1 byte a value plus a 1 KiB table per block).
// Rounds that were not int8 (diloco.compression "none", or a ring of one)
// travel as fp32 pieces.
//
// Wire (little-endian): magic 'IRND', u8 version, u8 reserved (0), u16
// reserved (0), u64 total values, u32 pieces, u32 reserved (0); then each
// piece: u8 kind (0 fp32, 1 int8), 3 reserved bytes (0), u32 int8 block (0 for
// fp32), u64 count, then count float32 or int8_encoded_bytes(count, block).
// The pieces cover the values in order, exactly. Nothing is trusted: sizes
// are checked before any byte is read, tables and fp32 values must be finite.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace intellect {

class RoundEncoder {
 public:
  explicit RoundEncoder(size_t total_values);
  void add_fp32(std::span<const float> values);
  // `encoded` is int8_encoded_bytes(count, block) bytes from int8_encode.
  void add_int8(size_t count, size_t block, std::span<const uint8_t> encoded);
  // Fails unless the pieces added cover exactly total_values.
  std::vector<uint8_t> finish();

 private:
  size_t total_, covered_ = 0;
  uint32_t pieces_ = 0;
  std::vector<uint8_t> body_;
};

// The whole of `values` as one fp32 piece.
std::vector<uint8_t> encode_round_fp32(std::span<const float> values);

// Decodes a round into `out`, whose size must be the round's value count.
// `what` names the blob in errors. `out` is unspecified after a failure.
void decode_round(std::span<const uint8_t> blob, std::span<float> out, const std::string& what);

}  // namespace intellect
