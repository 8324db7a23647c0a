// A donor's snapshot for a joiner, copied into the wire format
// (encode_join_state) on a thread of its own, so the training thread pays
// only for what must be taken between two of its own steps: AdamW's
// moments (they change at every inner step; the caller copies them first).
// The outer parameters and momentum are read where they live: they change
// only at an outer step's boundary, and the owner calls wait() before it
// changes them (or the moments' copy), so a snapshot is exactly the state
// of one outer step whenever the boundary comes. The copy of the 150m
// config's 4.36 GB held the training thread 2.3-2.8 s on the H200 host.
//
// Threads: start, wait and busy are the owner's (the training thread, in
// OuterSync); the copy and the sink run on the copier's thread, one copy at
// a time (start waits for the one before).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "train/join_state.h"

namespace intellect {

class SnapshotCopier {
 public:
  // Where a finished snapshot goes (MeshNode::publish_snapshot: hashed and
  // served from the donor's own threads). Called on the copier's thread.
  using Sink = std::function<void(int64_t outer_step, ByteBuffer bytes)>;
  explicit SnapshotCopier(Sink sink);
  ~SnapshotCopier();  // waits for a copy in progress
  SnapshotCopier(const SnapshotCopier&) = delete;
  SnapshotCopier& operator=(const SnapshotCopier&) = delete;

  // Copies the arrays `view` points to on the copier's thread, on up to
  // `threads` threads, and hands the bytes to the sink. The arrays must not
  // change, nor be freed, until wait() has returned.
  void start(const JoinStateView& view, size_t threads);
  // Returns once the copy in progress (if any) is done and handed to the
  // sink; the seconds waited (0 when none was running).
  double wait();
  // A copy is in progress (a joiner's request is being answered).
  bool busy() const { return busy_.load(); }
  // Tests: called on the copier's thread before it reads the arrays, to
  // hold a copy open while the owner reaches its next boundary.
  void set_before_copy_for_test(std::function<void()> f) { before_copy_ = std::move(f); }
  void set_sink_for_test(Sink sink) { sink_ = std::move(sink); }

 private:
  Sink sink_;
  std::function<void()> before_copy_;
  std::thread thread_;
  std::atomic<bool> busy_{false};
};

}  // namespace intellect
