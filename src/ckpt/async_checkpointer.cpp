#include "ckpt/async_checkpointer.h"

#include <chrono>

#include "util/error.h"

namespace intellect {

AsyncCheckpointer::AsyncCheckpointer(std::string root, int64_t keep, Log log)
    : root_(std::move(root)), keep_(keep), log_(std::move(log)), thread_([this] { run(); }) {}

AsyncCheckpointer::~AsyncCheckpointer() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !pending_ && !busy_; });
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (error_) {
    try {
      std::rethrow_exception(error_);
    } catch (const std::exception& e) {
      if (log_) log_(str("checkpoint failed: ", e.what()));
    }
  }
}

double AsyncCheckpointer::save(CheckpointState&& state) {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !pending_ && !busy_; });
  rethrow_pending_error();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  pending_ = std::move(state);
  lock.unlock();
  cv_.notify_all();
  return waited;
}

void AsyncCheckpointer::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !pending_ && !busy_; });
  rethrow_pending_error();
}

void AsyncCheckpointer::rethrow_pending_error() {
  if (!error_) return;
  std::exception_ptr e = error_;
  error_ = nullptr;
  std::rethrow_exception(e);
}

void AsyncCheckpointer::run() {
  for (;;) {
    CheckpointState state;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || pending_.has_value(); });
      if (!pending_) return;  // stop_ with nothing left
      state = std::move(*pending_);
      pending_.reset();
      busy_ = true;
    }
    try {
      const auto t0 = std::chrono::steady_clock::now();
      const std::string dir = write_checkpoint(root_, state);
      prune_checkpoints(root_, keep_);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (log_) log_(str("checkpoint ", dir, " written in ", s, " s"));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
    }
    cv_.notify_all();
  }
}

}  // namespace intellect
