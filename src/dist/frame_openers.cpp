#include "dist/frame_openers.h"

#include <signal.h>

#include <algorithm>
#include <chrono>

namespace intellect {

size_t FrameOpeners::default_threads() {
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return std::clamp<size_t>(cores / 4, 2, 8);
}

FrameOpeners::FrameOpeners(size_t threads) {
  workers_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

FrameOpeners::~FrameOpeners() { stop(); }

void FrameOpeners::run(Job job) {
  {
    std::lock_guard lk(mu_);
    if (!stopping_ && !workers_.empty() && queue_.size() < kMaxQueuedJobs) {
      queue_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  job();  // no workers, stopped, or the queue is full: the caller opens it
}

void FrameOpeners::stop() {
  std::deque<Job> dropped;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
  // `dropped` is destroyed here, outside the lock: a job's captures (the
  // connection's state, its cipher) may be the last references.
}

void FrameOpeners::work() {
  // Opening never writes to a socket, but a job may post to the loop; keep
  // SIGPIPE where the transport blocks it, on its own threads.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::unique_lock lk(mu_);
  for (;;) {
    // The idle wait re-checks once a second, so even a lost wake-up cannot
    // leave a worker parked past stop() or with work queued.
    cv_.wait_for(lk, std::chrono::seconds(1), [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    if (queue_.empty()) continue;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    job();
    job = nullptr;  // release its captures before sleeping
    lk.lock();
  }
}

}  // namespace intellect
