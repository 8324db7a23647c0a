#include "dist/state_chunk.h"

#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "dist/bytes.h"
#include "util/error.h"

namespace intellect {

namespace {
constexpr uint32_t kChunkMagic = 0x43545349;  // "ISTC" little-endian
constexpr uint8_t kChunkVersion = 1;

}  // namespace

const char* state_kind_name(StateKind k) {
  return k == StateKind::snapshot ? "snapshot" : k == StateKind::round ? "round" : "progress";
}

Digest blake2b_256(std::span<const uint8_t> bytes) {
  Digest d{};
  crypto_generichash(d.data(), d.size(), bytes.data(), bytes.size(), nullptr, 0);
  return d;
}

Digest blob_digest(uint64_t total_bytes, uint64_t chunk_bytes, std::span<const Digest> chunk_digests) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  static const char kDomain[] = "intellect state blob v1";  // not the digest of any chunk's bytes
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(kDomain), sizeof kDomain);
  ByteWriter w(16);
  w.u64(total_bytes);
  w.u64(chunk_bytes);
  const std::vector<uint8_t> sizes = w.take();
  crypto_generichash_update(&st, sizes.data(), sizes.size());
  for (const Digest& d : chunk_digests) crypto_generichash_update(&st, d.data(), d.size());
  Digest out{};
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

std::vector<Digest> chunk_digests(std::span<const uint8_t> bytes, size_t chunk_bytes, size_t threads) {
  INTELLECT_CHECK(chunk_bytes > 0, "chunk_digests: chunk size 0");
  const size_t n = (bytes.size() + chunk_bytes - 1) / chunk_bytes;
  std::vector<Digest> out(n);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;)
      out[i] = blake2b_256(bytes.subspan(i * chunk_bytes, std::min(chunk_bytes, bytes.size() - i * chunk_bytes)));
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < std::min(threads, n); ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  return out;
}

std::vector<uint8_t> encode_state_chunk(const StateChunkHeader& h, std::span<const uint8_t> bytes) {
  INTELLECT_CHECK(bytes.size() == h.count, "state chunk: count does not match the bytes");
  ByteWriter w(kStateChunkHeaderBytes + bytes.size());
  w.u32(kChunkMagic);
  w.u8(kChunkVersion);
  w.u8(static_cast<uint8_t>(h.kind));
  w.u16(0);
  w.u64(static_cast<uint64_t>(h.outer_step));
  w.u32(h.index);
  w.u32(h.count);
  w.bytes(h.digest.data(), h.digest.size());
  w.bytes(bytes.data(), bytes.size());
  return w.take();
}

StateChunkHeader parse_state_chunk(std::span<const uint8_t> msg, std::span<const uint8_t>& bytes,
                                   const std::string& what) {
  ByteReader r(msg.data(), msg.size(), what);
  if (r.u32("magic") != kChunkMagic) fail(what, ": not a state chunk (bad magic)");
  if (const uint8_t v = r.u8("version"); v != kChunkVersion) fail(what, ": state chunk version ", int(v));
  StateChunkHeader h;
  const uint8_t kind = r.u8("kind");
  if (kind < 1 || kind > 2) fail(what, ": state kind ", int(kind), " carries no chunks");
  h.kind = static_cast<StateKind>(kind);
  if (r.u16("reserved") != 0) fail(what, ": reserved bits set");
  const uint64_t step = r.u64("outer_step");
  if (step > static_cast<uint64_t>(INT64_MAX)) fail(what, ": outer_step out of range");
  h.outer_step = static_cast<int64_t>(step);
  h.index = r.u32("index");
  h.count = r.u32("count");
  r.bytes("digest", h.digest.data(), h.digest.size());
  if (r.remaining() != h.count)
    fail(what, ": chunk says ", h.count, " bytes but carries ", r.remaining(), " (truncated or corrupt)");
  bytes = msg.subspan(msg.size() - h.count);
  return h;
}

}  // namespace intellect
