// The buffer a dense round is written into for joiners and late nodes
// (PlannedRound: the round as the ring or the direct pattern carried it),
// recycled from the kept round its node last let go.
//
// Why: a node keeps the newest rounds for joiners (StateServer keeps 2, 3
// with overlap) and writes each new one into a buffer of its own, S bytes at
// int8 (277 MB for the 150m config, 10 GB for the 10B). Allocated fresh
// each round, glibc maps it anew, and the codec threads that write it
// fault in and zero every page: on the dev VM a 4-node loopback round of
// 67M values faulted 68K pages a node, all of them this buffer, once the
// messages' buffers were recycled (docs/PERFORMANCE.md, "The direct
// pattern, and message buffers recycled"). The round the server trims is
// given back here and the next round is written into its pages.
//
// One spare buffer at most, the last one given back: the peak is what it
// was (the kept rounds and the one being written), and between rounds the
// spare is the trimmed round's memory, held instead of unmapped. A spare
// serves a request of n bytes when its capacity is at least n and at most
// twice n (a rotation's rounds are 1/P of a full one; its full last round
// takes a fresh buffer rather than grow the spare).
//
// Thread-safe: one mutex. A trimmed round's last owner may be a state
// server's worker thread that was still sending it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "util/byte_buffer.h"

namespace intellect {

class RoundBuffers {
 public:
  // The process's pool (a pool of one's own: tests).
  static RoundBuffers& process();
  RoundBuffers() = default;

  // A buffer of size n whose bytes are unspecified (every byte of a planned
  // round is written before it is read).
  ByteBuffer take(size_t n);
  // Done with b: kept as the spare (replacing an older one), or freed.
  void give(ByteBuffer&& b);

  // Off: nothing is kept, every round a fresh allocation (what
  // bench_allreduce --no-buffer-reuse compares with).
  void set_enabled(bool on);

  // The spare's capacity and the buffers handed out again, for tests and benchmarks.
  size_t held_bytes();
  uint64_t reused();

 private:
  std::mutex mu_;
  ByteBuffer spare_;
  bool enabled_ = true;
  uint64_t reused_ = 0;
};

}  // namespace intellect
