// The pseudo-gradient codecs the ring all-reduce calls, behind one interface,
// so the ring's control flow (segments, chunks, hops, checks) is the same
// whatever travels: fp32, int8 (quantize.h), int4 (quantize4.h) or int2
// (quantize2.h, blocks2's selected blocks only). Each
// codec works on a flat range of values in blocks of block() values (the
// quantization table's or scale's reach; 0 for fp32), and its encoded size
// depends only on (count, block), so a receiver knows each message's size
// before it reads it.
//
// diloco.compression "sparse" (sparse.h) is not a BlockCodec: a top-k of a
// partial sum would drop other nodes' values with no one to keep them, so
// sparse contributions travel whole in an all-gather (sparse_allgather.h).
//
// Threads: a codec is immutable after construction; one may be shared by
// the lanes of a round.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace intellect {

// diloco.compression. The values are the ring header's compression byte.
// Int2 is not a diloco.compression of its own: blocks2's ring carries it.
enum class Compression : uint8_t { None = 0, Int8 = 1, Int4 = 2, Sparse = 3, Int2 = 4 };
// "none" | "int8" | "int4" | "int2" | "sparse"; anything else is an Error listing them.
Compression parse_compression(const std::string& s);
const char* compression_name(Compression c);
// A compression byte from a peer that names a ring codec (none, int8, int4,
// int2; not sparse, which travels in all-gather messages).
bool is_ring_codec_byte(uint8_t c);
// The block a codec uses by default: int8 65536 (a 1 KiB table each), int4
// and int2 64 (a scale each), sparse 4096 (12-bit indices), fp32 0.
size_t default_codec_block(Compression c);

class BlockCodec {
 public:
  virtual ~BlockCodec() = default;
  virtual Compression kind() const = 0;
  virtual uint32_t block() const = 0;
  virtual size_t encoded_bytes(size_t n) const = 0;
  // Throws Error naming `what` on a non-finite value.
  virtual void encode(const float* x, size_t n, uint8_t* out, const char* what) const = 0;
  // Bytes from a peer, already of encoded_bytes(n): throws Error naming
  // `what` unless every value they decode to is finite.
  virtual void validate(const uint8_t* in, size_t n, const char* what) const = 0;
  virtual void decode(const uint8_t* in, size_t n, float* out) const = 0;
  virtual void decode_add(const uint8_t* in, size_t n, float* acc) const = 0;
  // The sum of the squares of the n decoded values (contribution_check.h);
  // by default through a decode.
  virtual double sum_squares(const uint8_t* in, size_t n) const;
  // A ring hop's work on a validated payload in one pass, so the chunk is
  // read and written once, not once per step (issue 15: the hops were
  // CPU-bound): out[i] = decoded value i, plus base[i] when base is not
  // null (base may be out: in place), and *ss = sum_squares(in, n), the same
  // double, when ss is not null. Returns true when some out[i] is not
  // finite; the caller then looks for the cause. Bit for bit what decode or
  // a copy then decode_add, and sum_squares, give. One thread: the ring
  // runs one call per chunk on its codec pool.
  virtual bool decode_fused(const uint8_t* in, size_t n, const float* base, float* out, double* ss) const;
  // The direct pattern's owner (direct_allreduce.h) on k validated payloads
  // of n values: out[i] = (own[i] + d_0[i] + ... + d_{k-1}[i]) / divisor,
  // added in that order in float, d_j the values in[j] decodes to, and
  // ss[j] = sum_squares(in[j], n) when ss is not null. own may be out.
  // Bit for bit what decode_fused onto own and then onto out for each j,
  // and a division, give; returns true when some sum is not finite. By
  // default those passes; int8 does it in one, so the owner's chunk is read
  // and written once, not once per contribution.
  virtual bool average_fused(const uint8_t* const* in, size_t k, size_t n, const float* own, float* out,
                             float divisor, double* ss) const;
  // True when decode(encode(x)) may differ from x: the chunk's owner then
  // replaces its own copy with the decoded average, so every rank agrees.
  bool lossy() const { return kind() != Compression::None; }
};

// The encoded size without a codec object (header checks). block must be
// > 0 for int8, int4 and int2.
size_t codec_encoded_bytes(Compression c, size_t n, size_t block);

// A ring codec: None, Int8, Int4 or Int2 (Sparse is refused: not a ring codec).
// `threads` caps int8's OpenMP team per call (1: the calling thread only).
std::unique_ptr<BlockCodec> make_block_codec(Compression c, size_t block, int threads = 1);

}  // namespace intellect
