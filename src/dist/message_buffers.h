// Large message buffers recycled within a process: the frames a transport
// reads and writes, and the ring's and the direct pattern's messages.
//
// Why: every ring message used to be a fresh allocation of about a quarter
// of a megabyte (a chunk of 2^18 int8 values), and glibc handed most of
// them out as fresh pages: on the dev VM a 4-node loopback round of 67M
// values faulted in and zeroed about 94 MB of pages per node (ring) and 131
// MB (direct), about as many bytes as the round's messages, and the
// kernel's page zeroing was a tenth of all samples (docs/PERFORMANCE.md,
// "Message buffers"). A buffer given back here when its message is done
// (sent, or decoded) is handed to the next message of about its size, so
// its pages stay resident and warm.
//
// Only buffers of kMinBytes or more are kept (malloc serves small ones
// well), none over a quarter of the limit, and at most kMaxBytes of them in
// all (what a round keeps in flight, not what it sends): past that, kept
// buffers at least as large as the one given back are freed to make room
// (largest first), so a burst of large buffers (a donor's state chunks)
// does not crowd out the rounds' messages for good. A buffer is
// handed out for a request of n bytes when its capacity is at least n and
// at most twice n. A fresh one is reserved a little larger than asked,
// rounded to pages, so that buffers of one round's message kinds (a ring
// message, the same with its frame's tag) serve each other.
//
// Thread-safe: one mutex; a take or give is a map lookup under it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace intellect {

class MessageBuffers {
 public:
  static constexpr size_t kMinBytes = size_t{64} << 10;
  static constexpr size_t kMaxBytes = size_t{256} << 20;  // the default limit

  // The process's pool (a pool of one's own: tests).
  static MessageBuffers& process();
  MessageBuffers() = default;

  // An empty vector whose capacity is at least n.
  std::vector<uint8_t> take_capacity(size_t n);
  // A vector of size n (its bytes zero: std::vector's resize).
  std::vector<uint8_t> take(size_t n);
  // Done with v's bytes: kept for a later take, or freed.
  void give(std::vector<uint8_t>&& v);

  // At most this many bytes held (0: nothing is kept, every message is a
  // fresh allocation: what bench_allreduce --no-buffer-reuse compares with).
  void set_max_bytes(size_t bytes);

  // Bytes held and buffers handed out again, for tests and benchmarks.
  size_t held_bytes();
  uint64_t reused();

 private:
  std::mutex mu_;
  std::multimap<size_t, std::vector<uint8_t>> free_;  // by capacity
  size_t held_ = 0, max_ = kMaxBytes;
  uint64_t reused_ = 0;
};

}  // namespace intellect
