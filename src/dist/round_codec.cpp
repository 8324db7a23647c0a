#include "dist/round_codec.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <memory>

#include "dist/bytes.h"
#include "dist/quantize.h"
#include "dist/codec.h"
#include "dist/round_buffers.h"
#include "dist/ring_allreduce.h"
#include "dist/sparse.h"
#include "util/error.h"

namespace intellect {

static_assert(std::endian::native == std::endian::little, "fp32 pieces are memcpy'd: little-endian hosts only");

namespace {
constexpr uint32_t kMagic = 0x444e5249;  // "IRND" in memory order
constexpr uint8_t kVersion = 1;
// kSparseContributors: a sparse piece averaged per value over the
// contributions that kept it (SparseAggregation::Contributors).
constexpr uint8_t kFp32 = 0, kInt8 = 1, kInt4 = 2, kSparse = 3, kSparseContributors = 4, kInt2 = 5;
constexpr uint32_t kMaxWorld = 1u << 16;  // contributions in a sparse piece
constexpr size_t kHeaderBytes = 4 + 1 + 1 + 2 + 8 + 4 + 4;
constexpr size_t kPieceHeaderBytes = 1 + 3 + 4 + 8;

void write_piece_header(uint8_t* at, uint8_t kind, uint32_t block, uint64_t count) {
  ByteWriter w(kPieceHeaderBytes);
  w.u8(kind);
  w.u8(0);
  w.u16(0);
  w.u32(block);
  w.u64(count);
  std::memcpy(at, w.data().data(), kPieceHeaderBytes);
}

void piece_header(ByteBuffer& out, uint8_t kind, uint32_t block, uint64_t count) {
  const size_t at = out.size();
  out.resize(at + kPieceHeaderBytes);
  write_piece_header(out.data() + at, kind, block, count);
}

void round_header(uint8_t* at, uint64_t total, uint32_t pieces) {
  ByteWriter w(kHeaderBytes);
  w.u32(kMagic);
  w.u8(kVersion);
  w.u8(0);
  w.u16(0);
  w.u64(total);
  w.u32(pieces);
  w.u32(0);
  std::memcpy(at, w.data().data(), kHeaderBytes);
}

uint8_t dense_kind(Compression c) {
  switch (c) {
    case Compression::Int8: return kInt8;
    case Compression::Int4: return kInt4;
    case Compression::Int2: return kInt2;
    default: fail("round encoder: a dense ring piece with compression ", compression_name(c));
  }
}
}  // namespace

// The header's bytes are reserved up front and filled in by finish(), so the
// encoded round (a quarter of the model's fp32 size) is never copied.
RoundEncoder::RoundEncoder(size_t total_values) : total_(total_values), body_(kHeaderBytes, 0) {}

PlannedRound::PlannedRound(size_t total_values, std::span<const Piece> pieces) {
  if (pieces.size() > UINT32_MAX) fail("planned round: ", pieces.size(), " pieces");
  size_t size = kHeaderBytes, covered = 0;
  payload_at_.reserve(pieces.size());
  payload_bytes_.reserve(pieces.size());
  for (const Piece& p : pieces) {
    dense_kind(p.compression);
    if (p.block == 0 || p.block > UINT32_MAX) fail("planned round: a block of ", p.block, " values");
    payload_at_.push_back(size + kPieceHeaderBytes);
    payload_bytes_.push_back(codec_encoded_bytes(p.compression, p.count, p.block));
    size += kPieceHeaderBytes + payload_bytes_.back();
    covered += p.count;
  }
  if (covered != total_values) fail("planned round: the pieces cover ", covered, " of ", total_values, " values");
  bytes_ = RoundBuffers::process().take(size);
  round_header(bytes_.data(), total_values, static_cast<uint32_t>(pieces.size()));
  for (size_t i = 0; i < pieces.size(); ++i)
    write_piece_header(bytes_.data() + payload_at_[i] - kPieceHeaderBytes, dense_kind(pieces[i].compression),
                       static_cast<uint32_t>(pieces[i].block), pieces[i].count);
}

void RoundEncoder::add_fp32(std::span<const float> values) {
  if (values.size() > total_ - covered_)
    fail("round encoder: ", values.size(), " fp32 values would pass the end (", covered_, " of ", total_, " covered)");
  piece_header(body_, kFp32, 0, values.size());
  const size_t at = body_.size();
  body_.resize(at + values.size_bytes());
  std::memcpy(body_.data() + at, values.data(), values.size_bytes());
  covered_ += values.size();
  ++pieces_;
}

void RoundEncoder::add_int8(size_t count, size_t block, std::span<const uint8_t> encoded) {
  if (block == 0 || block > UINT32_MAX) fail("round encoder: int8 block of ", block, " values");
  if (count > total_ - covered_)
    fail("round encoder: ", count, " int8 values would pass the end (", covered_, " of ", total_, " covered)");
  if (encoded.size() != int8_encoded_bytes(count, block))
    fail("round encoder: ", encoded.size(), " bytes for ", count, " int8 values in blocks of ", block, " (expected ",
         int8_encoded_bytes(count, block), ")");
  piece_header(body_, kInt8, static_cast<uint32_t>(block), count);
  body_.insert(body_.end(), encoded.begin(), encoded.end());
  covered_ += count;
  ++pieces_;
}

void RoundEncoder::add_carried(const RingCarried& c) {
  if (c.compression == Compression::Int8) return add_int8(c.count, c.block, c.encoded);
  if (c.count > total_ - covered_)
    fail("round encoder: ", c.count, " values would pass the end (", covered_, " of ", total_, " covered)");
  if (c.block == 0 || c.block > UINT32_MAX) fail("round encoder: a block of ", c.block, " values");
  if (c.compression == Compression::Int4 || c.compression == Compression::Int2) {
    if (c.encoded.size() != codec_encoded_bytes(c.compression, c.count, c.block))
      fail("round encoder: ", c.encoded.size(), " bytes for ", c.count, " ", compression_name(c.compression), " values");
    piece_header(body_, dense_kind(c.compression), static_cast<uint32_t>(c.block), c.count);
  } else if (c.compression == Compression::Sparse) {
    if (c.world == 0 || c.world > kMaxWorld || c.encoded.size() != c.world * sparse_encoded_bytes(c.count, c.block, c.k))
      fail("round encoder: ", c.encoded.size(), " bytes for ", c.world, " sparse contributions of ", c.count, " values");
    piece_header(body_, c.aggregation == SparseAggregation::Contributors ? kSparseContributors : kSparse,
                 static_cast<uint32_t>(c.block), c.count);
    ByteWriter w(8);
    w.u32(static_cast<uint32_t>(c.k));
    w.u32(static_cast<uint32_t>(c.world));
    body_.insert(body_.end(), w.data().begin(), w.data().end());
  } else {
    fail("round encoder: a carried chunk with compression ", compression_name(c.compression));
  }
  body_.insert(body_.end(), c.encoded.begin(), c.encoded.end());
  covered_ += c.count;
  ++pieces_;
}

void RoundEncoder::reserve(size_t piece_bytes) { body_.reserve(kHeaderBytes + piece_bytes); }

size_t round_piece_bytes(const RingCarried& c) {
  return kPieceHeaderBytes + (c.compression == Compression::Sparse ? 8 : 0) + c.encoded.size();
}

size_t round_fp32_piece_bytes(size_t count) { return kPieceHeaderBytes + 4 * count; }

ByteBuffer RoundEncoder::finish() {
  if (covered_ != total_) fail("round encoder: the pieces cover ", covered_, " of ", total_, " values");
  round_header(body_.data(), total_, pieces_);
  ByteBuffer out = std::move(body_);
  body_.assign(kHeaderBytes, 0);
  covered_ = 0;
  pieces_ = 0;
  return out;
}

ByteBuffer encode_round_fp32(std::span<const float> values) {
  RoundEncoder e(values.size());
  e.add_fp32(values);
  return e.finish();
}

void decode_round(std::span<const uint8_t> blob, std::span<float> out, const std::string& what) {
  ByteReader r(blob.data(), blob.size(), what);
  if (r.u32("magic") != kMagic) fail(what, ": not a round's average (bad magic)");
  if (const uint8_t v = r.u8("version"); v != kVersion)
    fail(what, ": format version ", int(v), ", this build reads ", int(kVersion));
  if (r.u8("reserved") != 0 || r.u16("reserved") != 0) fail(what, ": reserved header bytes are not zero");
  const uint64_t total = r.u64("total values");
  if (total != out.size())
    fail(what, ": holds ", total, " values, but the model has ", out.size(),
         " parameters (the donor runs another model config)");
  const uint32_t pieces = r.u32("pieces");
  if (r.u32("reserved") != 0) fail(what, ": reserved header bytes are not zero");
  uint64_t at = 0;
  for (uint32_t p = 0; p < pieces; ++p) {
    const std::string piece = str(what, ", piece ", p);
    const uint8_t kind = r.u8("piece kind");
    if (r.u8("reserved") != 0 || r.u16("reserved") != 0) fail(piece, ": reserved bytes are not zero");
    const uint32_t block = r.u32("block");
    const uint64_t count = r.u64("count");
    if (count > total - at) fail(piece, ": ", count, " values from value ", at, " pass the end (", total, ")");
    if (kind == kFp32) {
      if (block != 0) fail(piece, ": an fp32 piece with a block of ", block);
      if (count > r.remaining() / sizeof(float)) fail(piece, ": truncated (", count, " fp32 values announced)");
      const uint8_t* p8 = r.view("fp32 values", count * sizeof(float));
      if (count > 0) std::memcpy(out.data() + at, p8, count * sizeof(float));  // out may be empty (null)
      for (uint64_t i = 0; i < count; ++i)
        if (!std::isfinite(out[at + i])) fail(piece, ": value ", at + i, " is not finite");
    } else if (kind == kInt8) {
      if (block == 0) fail(piece, ": an int8 piece with a block of 0");
      // Per block a 1 KiB table and at least one code: bounds the count
      // against the bytes left before int8_encoded_bytes is trusted.
      if (count > r.remaining()) fail(piece, ": truncated (", count, " int8 values announced)");
      const size_t n = int8_encoded_bytes(count, block);
      const uint8_t* p8 = r.view("int8 values", n);
      int8_validate(p8, count, block, piece.c_str());
      int8_decode(p8, count, block, out.data() + at, 1);
    } else if (kind == kInt4 || kind == kInt2) {
      const Compression c = kind == kInt4 ? Compression::Int4 : Compression::Int2;
      if (block == 0) fail(piece, ": an ", compression_name(c), " piece with a block of 0");
      // At least half (int4) or a quarter (int2) of a byte per value: bounds
      // the count before the size is computed.
      if (count / (kind == kInt4 ? 2 : 4) > r.remaining())
        fail(piece, ": truncated (", count, " ", compression_name(c), " values announced)");
      const std::unique_ptr<BlockCodec> codec = make_block_codec(c, block);
      const uint8_t* p8 = r.view("quantized values", codec->encoded_bytes(count));
      codec->validate(p8, count, piece.c_str());
      codec->decode(p8, count, out.data() + at);
    } else if (kind == kSparse || kind == kSparseContributors) {
      const uint32_t k = r.u32("sparse k");
      const uint32_t world = r.u32("sparse world");
      sparse_check_params(block, k, piece.c_str());
      if (world == 0 || world > kMaxWorld) fail(piece, ": ", world, " sparse contributions (1 to ", kMaxWorld, ")");
      // A block of count values takes at least 8 bytes per contribution.
      if (count / block > r.remaining() / 8) fail(piece, ": truncated (", count, " sparse values announced)");
      const size_t one = sparse_encoded_bytes(count, block, k);
      if (one > 0 && world > r.remaining() / one) fail(piece, ": truncated (", world, " contributions announced)");
      const uint8_t* p8 = r.view("sparse contributions", world * one);
      for (uint32_t w = 0; w < world; ++w)
        sparse_validate(p8 + w * one, count, block, k, str(piece, ", contribution ", w).c_str());
      sparse_average(p8, world, count, block, k, out.data() + at,
                     kind == kSparseContributors ? SparseAggregation::Contributors : SparseAggregation::Mean);
    } else {
      fail(piece, ": unknown kind ", int(kind), " (0 fp32, 1 int8, 2 int4, 3 sparse, 4 sparse averaged over contributors, 5 int2)");
    }
    at += count;
  }
  r.expect_end();
  if (at != total) fail(what, ": the pieces cover ", at, " of ", total, " values (truncated)");
}

}  // namespace intellect
