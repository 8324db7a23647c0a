#include <algorithm>
#include "dist/codec.h"

#include "dist/contribution_check.h"
#include "dist/finite.h"

#include <cstring>

#include "dist/quantize.h"
#include "dist/quantize2.h"
#include "dist/quantize4.h"
#include "dist/sparse.h"
#include "util/error.h"

namespace intellect {

Compression parse_compression(const std::string& s) {
  if (s == "none") return Compression::None;
  if (s == "int8") return Compression::Int8;
  if (s == "int4") return Compression::Int4;
  if (s == "sparse") return Compression::Sparse;
  if (s == "int2") return Compression::Int2;
  fail("unknown all-reduce compression \"", s,
       "\" (diloco.compression): use \"none\" (fp32), \"int8\" (the default), \"int4\" or \"sparse\" "
       "(top-k with error feedback, density diloco.sparse_density)");
}

const char* compression_name(Compression c) {
  switch (c) {
    case Compression::None: return "none";
    case Compression::Int8: return "int8";
    case Compression::Int4: return "int4";
    case Compression::Sparse: return "sparse";
    case Compression::Int2: return "int2";
  }
  return "?";
}

bool is_ring_codec_byte(uint8_t c) {
  return c <= static_cast<uint8_t>(Compression::Int4) || c == static_cast<uint8_t>(Compression::Int2);
}

size_t default_codec_block(Compression c) {
  switch (c) {
    case Compression::None: return 0;
    case Compression::Int8: return size_t{1} << 16;
    case Compression::Int4: return kInt4DefaultGroup;
    case Compression::Sparse: return kSparseMaxBlock;
    case Compression::Int2: return kInt2DefaultGroup;
  }
  return 0;
}

size_t codec_encoded_bytes(Compression c, size_t n, size_t block) {
  switch (c) {
    case Compression::None: return n * sizeof(float);
    case Compression::Int8: return int8_encoded_bytes(n, block);
    case Compression::Int4: return int4_encoded_bytes(n, block);
    case Compression::Int2: return int2_encoded_bytes(n, block);
    case Compression::Sparse: break;
  }
  fail("codec_encoded_bytes: ", compression_name(c), " is not a ring codec");
}

// Decoded a few blocks at a time into a buffer on the stack: a check on
// every arriving message must not allocate (int4 and int2 land here). Blocks are
// encoded back to back, so a whole number of them starts at
// encoded_bytes(values before it).
double BlockCodec::sum_squares(const uint8_t* in, size_t n) const {
  constexpr size_t kBuffer = 4096;
  const size_t b = block();
  double s = 0.0;
  if (b == 0 || b > kBuffer) {
    std::vector<float> v(n);
    decode(in, n, v.data());
    for (float x : v) s += double(x) * double(x);
    return s;
  }
  float buf[kBuffer];
  const size_t step = (kBuffer / b) * b;
  for (size_t lo = 0; lo < n; lo += step) {
    const size_t len = std::min(step, n - lo);
    decode(in + encoded_bytes(lo), len, buf);
    for (size_t i = 0; i < len; ++i) s += double(buf[i]) * double(buf[i]);
  }
  return s;
}

// The separate passes, for codecs without a fused kernel (int4, int2).
bool BlockCodec::decode_fused(const uint8_t* in, size_t n, const float* base, float* out, double* ss) const {
  if (ss) *ss = sum_squares(in, n);
  if (!base) {
    decode(in, n, out);
    return false;
  }
  if (base != out && n) std::memcpy(out, base, n * sizeof(float));
  decode_add(in, n, out);
  return first_non_finite(out, n) < n;
}

bool BlockCodec::average_fused(const uint8_t* const* in, size_t k, size_t n, const float* own, float* out,
                               float divisor, double* ss) const {
  bool non_finite = false;
  for (size_t j = 0; j < k; ++j) non_finite |= decode_fused(in[j], n, j == 0 ? own : out, out, ss ? &ss[j] : nullptr);
  if (k == 0 && own != out && n) std::memcpy(out, own, n * sizeof(float));
  for (size_t i = 0; i < n; ++i) out[i] /= divisor;
  return non_finite;
}

namespace {

class Fp32Codec final : public BlockCodec {
 public:
  double sum_squares(const uint8_t* in, size_t n) const override { return fp32_sum_squares(in, n); }
  // The sum of squares stays its own sequential pass: a double sum's order
  // is its value.
  bool decode_fused(const uint8_t* in, size_t n, const float* base, float* out, double* ss) const override {
    if (ss) *ss = fp32_sum_squares(in, n);
    if (!base) {
      decode(in, n, out);
      return false;
    }
    uint32_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, in + 4 * i, 4);
      v = base[i] + v;
      out[i] = v;
      bad |= non_finite_bit(v);
    }
    return bad != 0;
  }
  Compression kind() const override { return Compression::None; }
  uint32_t block() const override { return 0; }
  size_t encoded_bytes(size_t n) const override { return n * sizeof(float); }
  void encode(const float* x, size_t n, uint8_t* out, const char*) const override {
    if (n) std::memcpy(out, x, n * sizeof(float));
  }
  void validate(const uint8_t* in, size_t n, const char* what) const override {
    for (size_t i = 0; i < n; ++i) {
      uint32_t b;
      std::memcpy(&b, in + 4 * i, 4);
      if ((b & 0x7f800000u) == 0x7f800000u)
        fail(what, ": value ", i, " is not finite (a diverged peer or a corrupt message)");
    }
  }
  void decode(const uint8_t* in, size_t n, float* out) const override {
    if (n) std::memcpy(out, in, n * sizeof(float));
  }
  void decode_add(const uint8_t* in, size_t n, float* acc) const override {
    for (size_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, in + 4 * i, 4);
      acc[i] += v;
    }
  }
};

class Int8Codec final : public BlockCodec {
 public:
  double sum_squares(const uint8_t* in, size_t n) const override { return int8_sum_squares(in, n, block()); }
  Int8Codec(size_t block, int threads) : block_(block), threads_(threads) {}
  Compression kind() const override { return Compression::Int8; }
  uint32_t block() const override { return static_cast<uint32_t>(block_); }
  size_t encoded_bytes(size_t n) const override { return int8_encoded_bytes(n, block_); }
  void encode(const float* x, size_t n, uint8_t* out, const char* what) const override {
    int8_encode(x, n, block_, out, what, threads_);
  }
  void validate(const uint8_t* in, size_t n, const char* what) const override { int8_validate(in, n, block_, what); }
  void decode(const uint8_t* in, size_t n, float* out) const override { int8_decode(in, n, block_, out, threads_); }
  void decode_add(const uint8_t* in, size_t n, float* acc) const override {
    int8_decode_add(in, n, block_, acc, threads_);
  }
  bool decode_fused(const uint8_t* in, size_t n, const float* base, float* out, double* ss) const override {
    return int8_decode_fused(in, n, block_, base, out, ss);
  }
  bool average_fused(const uint8_t* const* in, size_t k, size_t n, const float* own, float* out, float divisor,
                     double* ss) const override {
    return int8_average_fused(in, k, n, block_, own, out, divisor, ss);
  }

 private:
  size_t block_;
  int threads_;
};

// int4 and int2: a scale per group of values, the same calls on another
// format.
struct GroupFormat {
  Compression kind;
  size_t (*encoded_bytes)(size_t n, size_t group);
  void (*encode)(const float* x, size_t n, size_t group, uint8_t* out, const char* what);
  void (*validate)(const uint8_t* in, size_t n, size_t group, const char* what);
  void (*decode)(const uint8_t* in, size_t n, size_t group, float* out);
  void (*decode_add)(const uint8_t* in, size_t n, size_t group, float* acc);
};
constexpr GroupFormat kInt4Format{Compression::Int4, int4_encoded_bytes, int4_encode, int4_validate, int4_decode,
                                  int4_decode_add};
constexpr GroupFormat kInt2Format{Compression::Int2, int2_encoded_bytes, int2_encode, int2_validate, int2_decode,
                                  int2_decode_add};

class GroupCodec final : public BlockCodec {
 public:
  GroupCodec(const GroupFormat& f, size_t group) : f_(f), group_(group) {}
  Compression kind() const override { return f_.kind; }
  uint32_t block() const override { return static_cast<uint32_t>(group_); }
  size_t encoded_bytes(size_t n) const override { return f_.encoded_bytes(n, group_); }
  void encode(const float* x, size_t n, uint8_t* out, const char* what) const override {
    f_.encode(x, n, group_, out, what);
  }
  void validate(const uint8_t* in, size_t n, const char* what) const override { f_.validate(in, n, group_, what); }
  void decode(const uint8_t* in, size_t n, float* out) const override { f_.decode(in, n, group_, out); }
  void decode_add(const uint8_t* in, size_t n, float* acc) const override { f_.decode_add(in, n, group_, acc); }

 private:
  const GroupFormat& f_;
  size_t group_;
};

}  // namespace

std::unique_ptr<BlockCodec> make_block_codec(Compression c, size_t block, int threads) {
  if (c != Compression::None && (block == 0 || block > UINT32_MAX))
    fail(compression_name(c), " codec: a block of ", block, " values (must be in [1, 2^32))");
  switch (c) {
    case Compression::None: return std::make_unique<Fp32Codec>();
    case Compression::Int8: return std::make_unique<Int8Codec>(block, threads);
    case Compression::Int4: return std::make_unique<GroupCodec>(kInt4Format, block);
    case Compression::Int2: return std::make_unique<GroupCodec>(kInt2Format, block);
    case Compression::Sparse: break;
  }
  fail("diloco.compression \"sparse\" is not a ring all-reduce codec: its contributions travel in an "
       "all-gather (sparse_allgather.h)");
}

}  // namespace intellect
