#include "dist/commitment.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "dist/bytes.h"
#include "dist/contribution_check.h"
#include "dist/ring_evidence.h"
#include "dist/shard_plan.h"
#include "util/error.h"

namespace intellect {

namespace {

// 2: leaves are SHA-256 (leaf_digest).
constexpr uint8_t kLeafVersion = 2;
constexpr uint8_t kLeafSigned = 1;

void put_u64(crypto_generichash_state& st, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  crypto_generichash_update(&st, b, 8);
}
void put_u32(crypto_generichash_state& st, uint32_t v) {
  uint8_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  crypto_generichash_update(&st, b, 4);
}
void put_label(crypto_generichash_state& st, const char* label) {
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), std::strlen(label) + 1);
}

}  // namespace

// SHA-256, not BLAKE2b as the roots: every leaf byte of every contribution
// is hashed by its sender before the ring and by its successor in it (and
// every signed message's payload), and OpenSSL's SHA-256 runs on the CPU's
// SHA extensions more than twice as fast as libsodium's BLAKE2b (dev VM,
// `bench_evidence`: signing a 266 KB message, which is this hash, 0.63–0.66
// GB/s before, 1.38–1.69 after): the commitment was as slow as the ring.
Digest leaf_digest(std::span<const uint8_t> encoded) {
  static_assert(sizeof(Digest) == 32, "a leaf digest is SHA-256's 32 bytes");
  Digest d{};
  unsigned int n = 0;
  if (EVP_Digest(encoded.data(), encoded.size(), d.data(), &n, EVP_sha256(), nullptr) != 1 || n != d.size())
    fail("leaf_digest: OpenSSL's SHA-256 failed (", ERR_reason_error_string(ERR_get_error()), ")");
  return d;
}

Digest lane_root(uint64_t lane_elems, std::span<const Digest> leaves) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  put_label(st, "intellect lane leaves v2");
  put_u64(st, lane_elems);
  for (const Digest& d : leaves) crypto_generichash_update(&st, d.data(), d.size());
  Digest out{};
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

Digest commitment_root(uint64_t total_elems, const CommitLayout& layout, std::span<const Digest> lane_roots) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  put_label(st, "intellect pseudo-gradient commitment v3");
  put_u64(st, total_elems);
  const uint8_t c = static_cast<uint8_t>(layout.compression);
  crypto_generichash_update(&st, &c, 1);
  put_u32(st, static_cast<uint32_t>(layout.block));
  put_u32(st, static_cast<uint32_t>(layout.chunk));
  put_u32(st, static_cast<uint32_t>(layout.lanes));
  for (const Digest& d : lane_roots) crypto_generichash_update(&st, d.data(), d.size());
  Digest out{};
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

size_t aligned_segment_begin(size_t S, size_t N, size_t chunk, size_t s) {
  const size_t leaves = (S + chunk - 1) / chunk;
  return std::min(S, chunk * (leaves * s / N));
}

std::span<const uint8_t> LeafCommitment::leaf_bytes(size_t lane, size_t i) const {
  INTELLECT_CHECK(lane < encoded.size() && lane < leaves.size() && i < leaves[lane].size());
  const size_t full = codec_encoded_bytes(layout.compression, layout.chunk, layout.block);
  const size_t begin = i * full;
  const size_t end = i + 1 == leaves[lane].size() ? encoded[lane].size() : begin + full;
  INTELLECT_CHECK(begin <= end && end <= encoded[lane].size());
  return {encoded[lane].data() + begin, end - begin};
}

namespace {

// One leaf's encoding, and the sum of its squares when ss is not null. Both
// walk the leaf a piece of whole codec blocks at a time, so each piece's
// values are read from memory once and summed while they are still in
// cache: a leaf (a million values) is larger than a core's cache, and the
// norm's own pass over it was a second read of the whole contribution from
// memory, on hosts where several nodes' rounds are bound by memory
// bandwidth (docs/PERFORMANCE.md). Blocks are encoded independently, so the
// pieces' encodings laid end to end are the leaf's, byte for byte.
void encode_leaf(const BlockCodec& codec, const float* x, size_t n, uint8_t* out, double* ss) {
  const size_t block = codec.block() ? codec.block() : 1;
  const size_t piece = block * std::max<size_t>(1, (size_t{1} << 16) / block);
  if (!ss || n <= piece) {
    codec.encode(x, n, out, "the pseudo-gradient");
    if (ss) *ss = sum_squares_f64(x, nullptr, n);
    return;
  }
  double total = 0.0;
  size_t at = 0;
  for (size_t off = 0; off < n; off += piece) {
    const size_t len = std::min(piece, n - off);
    codec.encode(x + off, len, out + at, "the pseudo-gradient");
    total += sum_squares_f64(x + off, nullptr, len);
    at += codec.encoded_bytes(len);
  }
  INTELLECT_CHECK(at == codec.encoded_bytes(n));
  *ss = total;
}

}  // namespace

LeafCommitment commit_leaves(std::span<const float> x, const CommitLayout& layout, int threads, double* sum_squares,
                             bool keep_encoded, std::vector<std::vector<uint8_t>> reuse) {
  if (layout.chunk == 0 || layout.chunk > UINT32_MAX || layout.lanes < 1)
    fail("commit_leaves: a chunk of ", layout.chunk, " values over ", layout.lanes, " lanes");
  LeafCommitment c;
  c.layout = layout;
  c.total_elems = x.size();
  const std::vector<FlatRange> lanes = ring_segments(x.size(), layout.lanes);
  // Every leaf of every lane, as (lane, first value, values), encoded and
  // hashed by a team that takes leaves in turn.
  struct Leaf {
    size_t lane, begin, count;
  };
  std::vector<Leaf> all;
  c.leaves.resize(lanes.size());
  for (size_t k = 0; k < lanes.size(); ++k) {
    const size_t n = (lanes[k].size() + layout.chunk - 1) / layout.chunk;
    c.leaves[k].resize(n);
    for (size_t i = 0; i < n; ++i)
      all.push_back({k, lanes[k].begin + i * layout.chunk, std::min(layout.chunk, lanes[k].size() - i * layout.chunk)});
  }
  std::vector<double> leaf_ss(sum_squares ? all.size() : 0);
  // Kept leaves go straight to their place: every leaf but a lane's last
  // is a whole chunk, so leaf i starts at i whole chunks' encodings.
  const size_t full_bytes = codec_encoded_bytes(layout.compression, layout.chunk, layout.block);
  if (keep_encoded) {
    c.encoded = std::move(reuse);
    c.encoded.resize(lanes.size());
    for (size_t k = 0; k < lanes.size(); ++k) {
      const size_t n = c.leaves[k].size();
      const size_t last = n ? lanes[k].size() - (n - 1) * layout.chunk : 0;
      c.encoded[k].resize(n ? (n - 1) * full_bytes + codec_encoded_bytes(layout.compression, last, layout.block) : 0);
    }
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::string error;
  std::mutex error_mu;
  auto work = [&] {
    try {
      const std::unique_ptr<BlockCodec> codec = make_block_codec(layout.compression, layout.block, 1);
      std::vector<uint8_t> enc;
      for (size_t j; !failed && (j = next++) < all.size();) {
        const Leaf& l = all[j];
        const size_t i = (l.begin - lanes[l.lane].begin) / layout.chunk;
        const size_t bytes = codec->encoded_bytes(l.count);
        uint8_t* out = keep_encoded ? c.encoded[l.lane].data() + i * full_bytes : (enc.resize(bytes), enc.data());
        encode_leaf(*codec, x.data() + l.begin, l.count, out, sum_squares ? &leaf_ss[j] : nullptr);
        c.leaves[l.lane][i] = leaf_digest({out, bytes});
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!failed.exchange(true)) error = e.what();
    }
  };
  const size_t team = std::clamp<size_t>(static_cast<size_t>(std::max(threads, 1)), 1, std::max<size_t>(1, all.size()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < team; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (failed) fail("committing to the pseudo-gradient: ", error);
  if (sum_squares) {
    *sum_squares = 0.0;
    for (double v : leaf_ss) *sum_squares += v;
  }
  for (size_t k = 0; k < lanes.size(); ++k) c.lane_roots.push_back(lane_root(lanes[k].size(), c.leaves[k]));
  c.root = commitment_root(c.total_elems, layout, c.lane_roots);
  return c;
}

bool is_leaf_message(std::span<const uint8_t> msg) {
  if (msg.size() < 4) return false;
  uint32_t magic = 0;
  for (int i = 0; i < 4; ++i) magic |= uint32_t{msg[static_cast<size_t>(i)]} << (8 * i);
  return magic == kLeafMagic;
}

std::vector<uint8_t> encode_leaf_message(const LeafMessage& m, const NodeKey* signer) {
  ByteWriter w(kLeafHeaderBytes + 32 * (m.lane_roots.size() + m.leaves.size()) + kRingSignatureBytes);
  w.u32(kLeafMagic);
  w.u8(kLeafVersion);
  w.u8(signer ? kLeafSigned : 0);
  w.u8(static_cast<uint8_t>(m.layout.compression));
  w.u8(0);
  w.u64(m.round);
  w.u64(m.total_elems);
  w.u64(m.lane_elems);
  w.u32(m.lane);
  w.u32(static_cast<uint32_t>(m.lane_roots.size()));
  w.u32(static_cast<uint32_t>(m.layout.block));
  w.u32(static_cast<uint32_t>(m.layout.chunk));
  w.u32(static_cast<uint32_t>(m.leaves.size()));
  INTELLECT_CHECK(w.size() == kLeafHeaderBytes);
  for (const Digest& d : m.lane_roots) w.bytes(d.data(), d.size());
  for (const Digest& d : m.leaves) w.bytes(d.data(), d.size());
  std::vector<uint8_t> out = w.take();
  if (signer) {
    out.resize(out.size() + kRingSignatureBytes);
    sign_ring_message(out, *signer);
  }
  return out;
}

LeafMessage parse_leaf_message(std::span<const uint8_t> msg, const std::string& what) {
  ByteReader r(msg.data(), msg.size(), what);
  if (r.u32("magic") != kLeafMagic) fail(what, ": not a commitment leaf message (bad magic)");
  if (const uint8_t v = r.u8("version"); v != kLeafVersion)
    fail(what, ": leaf message version ", int(v), ", we speak ", int(kLeafVersion),
         "; run the same intellect build on every node");
  LeafMessage m;
  const uint8_t flags = r.u8("flags");
  if (flags & ~kLeafSigned) fail(what, ": unknown leaf message flags ", int(flags));
  m.is_signed = flags & kLeafSigned;
  const uint8_t c = r.u8("compression");
  if (!is_ring_codec_byte(c)) fail(what, ": compression ", int(c), " is not a ring codec");
  m.layout.compression = static_cast<Compression>(c);
  if (r.u8("reserved") != 0) fail(what, ": reserved byte is not zero");
  m.round = r.u64("round");
  m.total_elems = r.u64("total_elems");
  m.lane_elems = r.u64("lane_elems");
  m.lane = r.u32("lane");
  const uint32_t lanes = r.u32("lanes");
  m.layout.block = r.u32("block");
  m.layout.chunk = r.u32("chunk");
  const uint32_t leaves = r.u32("leaves");
  if (lanes == 0 || lanes > 64 || m.lane >= lanes) fail(what, ": lane ", m.lane, " of ", lanes, " (at most 64)");
  m.layout.lanes = static_cast<int>(lanes);
  if (m.layout.chunk == 0) fail(what, ": a chunk of 0 values");
  if ((m.layout.compression != Compression::None) != (m.layout.block != 0))
    fail(what, ": block ", m.layout.block, " with compression ", compression_name(m.layout.compression));
  if (leaves > kMaxLeaves) fail(what, ": ", leaves, " leaves, more than ", kMaxLeaves);
  const size_t want = 32 * (size_t{lanes} + leaves) + (m.is_signed ? kRingSignatureBytes : 0);
  if (r.remaining() != want)
    fail(what, ": ", r.remaining(), " bytes after the header where ", lanes, " lane roots and ", leaves, " leaves",
         m.is_signed ? " and a signature" : "", " take ", want);
  m.lane_roots.resize(lanes);
  for (Digest& d : m.lane_roots) r.bytes("lane root", d.data(), d.size());
  m.leaves.resize(leaves);
  for (Digest& d : m.leaves) r.bytes("leaf", d.data(), d.size());
  return m;
}

bool leaf_message_root(const LeafMessage& m, Digest* root, std::string* why) {
  const uint64_t want = (m.lane_elems + m.layout.chunk - 1) / m.layout.chunk;
  if (m.leaves.size() != want) {
    *why = str(m.leaves.size(), " leaves for a lane of ", m.lane_elems, " values in chunks of ", m.layout.chunk,
               " (", want, " expected)");
    return false;
  }
  if (lane_root(m.lane_elems, m.leaves) != m.lane_roots[m.lane]) {
    *why = str("its leaves do not hash to its own lane root (lane ", m.lane, ")");
    return false;
  }
  *root = commitment_root(m.total_elems, m.layout, m.lane_roots);
  return true;
}

}  // namespace intellect
