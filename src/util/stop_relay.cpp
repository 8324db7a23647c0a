#include "util/stop_relay.h"

namespace intellect {

StopRelay::StopRelay(const std::atomic<bool>& stop, std::function<void()> on_stop, std::chrono::milliseconds every)
    : stop_(stop), on_stop_(std::move(on_stop)), every_(every), thread_([this] { loop(); }) {}

StopRelay::~StopRelay() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StopRelay::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  // Polled: a signal handler cannot notify a condition variable.
  while (!closing_) {
    if (stop_.load()) {
      fired_ = true;
      lock.unlock();
      on_stop_();
      return;
    }
    cv_.wait_for(lock, every_, [this] { return closing_; });
  }
}

}  // namespace intellect
