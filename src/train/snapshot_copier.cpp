#include "train/snapshot_copier.h"

#include <chrono>
#include <exception>

#include "train/log.h"
#include "util/error.h"

namespace intellect {

SnapshotCopier::SnapshotCopier(Sink sink) : sink_(std::move(sink)) {}

SnapshotCopier::~SnapshotCopier() { wait(); }

void SnapshotCopier::start(const JoinStateView& view, size_t threads) {
  wait();
  busy_ = true;
  thread_ = std::thread([this, view, threads] {
    try {
      if (before_copy_) before_copy_();
      const Clock::time_point t0 = Clock::now();
      ByteBuffer bytes = encode_join_state(view, threads);
      note(str("copied the snapshot of outer step ", view.outer_step, " for a joiner (", bytes.size() / 1e6,
               " MB) in ", seconds_since(t0), " s"));
      sink_(view.outer_step, std::move(bytes));
    } catch (const std::exception& e) {  // out of memory, say: the joiner asks again, the trainer offers another
      note(str("could not copy the snapshot of outer step ", view.outer_step, " for a joiner: ", e.what()));
    }
    busy_ = false;
  });
}

double SnapshotCopier::wait() {
  if (!thread_.joinable()) return 0.0;
  const Clock::time_point t0 = Clock::now();
  thread_.join();
  return seconds_since(t0);
}

}  // namespace intellect
