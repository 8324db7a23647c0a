// Saves checkpoints on a background thread. The training loop copies its
// state to host memory (the only stall it pays), hands it over, and goes on;
// the thread writes, fsyncs, marks complete and prunes old checkpoints.
#pragma once
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "ckpt/checkpoint.h"

namespace intellect {

class AsyncCheckpointer {
 public:
  using Log = std::function<void(const std::string&)>;
  AsyncCheckpointer(std::string root, int64_t keep, Log log);
  ~AsyncCheckpointer();  // finishes the pending save (errors are logged, not thrown)
  AsyncCheckpointer(const AsyncCheckpointer&) = delete;
  AsyncCheckpointer& operator=(const AsyncCheckpointer&) = delete;

  // Queues a save. One save runs at a time: if the previous one is still
  // writing, this waits for it first (the caller learns how long). Rethrows
  // the error of a previous save that failed.
  double save(CheckpointState&& state);  // returns seconds spent waiting for the previous save
  // Blocks until no save is pending; rethrows a failed save's error.
  void wait();

 private:
  void run();
  void rethrow_pending_error();  // with mu_ held
  std::string root_;
  int64_t keep_;
  Log log_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<CheckpointState> pending_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace intellect
