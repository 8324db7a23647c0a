// What a node that joins a run in progress receives from its donor: the
// DiLoCo state as of the donor's latest outer step. Outer parameters and
// momentum are the same on every node after an outer step (the coordinator
// checks their hash); AdamW's moments are the donor's own, a warm start for
// the joiner's inner optimizer. The data position is not part of it: the
// joiner reads the partition the coordinator gave it.
//
// Layout (format 2): four fp32 arrays of n values (little-endian): outer
// parameters, outer momentum, AdamW exp_avg, exp_avg_sq; then the header as
// JSON (format, outer_step, step, adam_step, n), its length as a u64, and the
// 8-byte tag "IJSTATE2".
//
// Why the arrays come first and the header last: the first 8n bytes (outer
// parameters and momentum) are then the same bytes on every node at the same
// outer step, at the same offsets whatever the header holds, so a joiner can
// fetch that prefix's chunks from several donors at once and only the rest
// from its own donor (state_stream.h: stripes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "util/byte_buffer.h"

namespace intellect {

struct JoinState {
  int64_t outer_step = 0;  // the outer steps completed
  int64_t step = 0;        // inner steps the donor had done when it took the snapshot
  int64_t adam_step = 0;   // AdamW's step counter
  std::vector<float> outer, momentum, exp_avg, exp_avg_sq;
};

// The same fields, viewed where they live (the outer optimizer, the
// backend's moments), so a donor copies each byte once, on `threads` threads.
struct JoinStateView {
  int64_t outer_step = 0, step = 0, adam_step = 0;
  std::span<const float> outer, momentum, exp_avg, exp_avg_sq;
};

ByteBuffer encode_join_state(const JoinStateView& s, size_t threads = 1);
// The bytes at the start of an encoded state of n values that every node
// holds alike at the same outer step (outer parameters and momentum).
constexpr uint64_t join_state_shared_bytes(size_t n) { return uint64_t{2} * n * sizeof(float); }
ByteBuffer encode_join_state(const JoinState& s);
// Checks the format, that every array has n values and that n is `expected_n`
// (this model's parameter count); fails naming what does not fit. The copy
// into the four arrays runs on `threads` threads (0: the machine's, up to 16):
// at 10B it is 160 GB of fresh pages on the joiner's way into the ring.
JoinState decode_join_state(std::span<const uint8_t> bytes, size_t expected_n, size_t threads = 0);

}  // namespace intellect
