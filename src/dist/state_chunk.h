// State-stream chunk messages: what a joiner parses off the network from a
// donor (state_stream.h has the protocol). Kept apart from the transport so
// the fuzzer links only this.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace intellect {

// progress: no blob, the donor's count of inner steps done (a joiner uses it
// to line its first round up with the others').
enum class StateKind : uint8_t { snapshot = 1, round = 2, progress = 3 };
const char* state_kind_name(StateKind k);

using Digest = std::array<uint8_t, 32>;
Digest blake2b_256(std::span<const uint8_t> bytes);
// A blob's digest: BLAKE2b-256 over its size, its chunk size and its chunks'
// digests in order. As binding as a digest of the bytes, but one pass over
// them (the chunk digests) instead of two, and those can run in parallel.
Digest blob_digest(uint64_t total_bytes, uint64_t chunk_bytes, std::span<const Digest> chunk_digests);
// The digests of every chunk_bytes-long piece of `bytes`, on up to `threads` threads.
std::vector<Digest> chunk_digests(std::span<const uint8_t> bytes, size_t chunk_bytes, size_t threads);

// --- chunk messages, exposed for the tests and the fuzzer -------------------
struct StateChunkHeader {
  StateKind kind = StateKind::snapshot;
  int64_t outer_step = 0;
  uint32_t index = 0, count = 0;
  Digest digest{};
};
constexpr size_t kStateChunkHeaderBytes = 4 + 1 + 1 + 2 + 8 + 4 + 4 + 32;
std::vector<uint8_t> encode_state_chunk(const StateChunkHeader& h, std::span<const uint8_t> bytes);
// Parses and checks magic, version, kind, reserved bits and that the payload
// holds exactly `count` bytes. Returns the header; `bytes` views into msg.
StateChunkHeader parse_state_chunk(std::span<const uint8_t> msg, std::span<const uint8_t>& bytes,
                                   const std::string& what);

}  // namespace intellect
