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
