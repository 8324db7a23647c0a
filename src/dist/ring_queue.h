// The pieces of a ring's sending side shared by the ring all-reduce and the
// sparse all-gather: the sender thread's queue, its loop (send_queued, also
// over the ring's ordered queue) and the first-error latch.
// Owned by one ring call; the queue is filled by the computing thread and
// drained by the sender thread.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace intellect {

// The sender thread's queue. Unbounded on purpose: the receiving thread must
// never block on a send, or N ranks each waiting for their successor to drain
// would deadlock the ring. It holds at most one round of outgoing messages.
class SendQueue {
 public:
  void push(std::vector<uint8_t> msg) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      q_.push_back(std::move(msg));
    }
    cv_.notify_one();
  }
  // False once closed and drained, or stopped.
  bool pop(std::vector<uint8_t>& out) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stopped_ || closed_ || !q_.empty(); });
    if (stopped_ || q_.empty()) return false;
    out = std::move(q_.front());
    q_.pop_front();
    return true;
  }
  void close() {  // no more messages: the sender exits once the queue is empty
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  void stop() {  // abandon what is queued
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    q_.clear();
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> q_;
  bool closed_ = false, stopped_ = false;
};

// The sender thread's loop, for either queue (this SendQueue, or the ring's
// ordered queue in ring_pipeline.h): each message handed to the link in the
// order the queue gives it, timed and counted into the round's stats
// (RingStats). Returns when the queue is closed and drained or stopped;
// throws what the link throws (the caller records it and aborts the round).
template <class Queue, class Link, class Stats, class Deadline>
void send_queued(Queue& queue, Link& link, Stats& stats, Deadline deadline) {
  std::vector<uint8_t> msg;
  while (queue.pop(msg)) {
    const auto t = std::chrono::steady_clock::now();
    const size_t bytes = msg.size();
    link.send_owned_to_next(std::move(msg), deadline());
    stats.send_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    stats.bytes_sent += bytes;
    stats.messages_sent += 1;
  }
}

// The first failure wins: a neighbour's abort makes the other thread's call
// fail too, and that second message would hide the cause.
class FirstError {
 public:
  void record(const std::string& msg) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!set_) {
      set_ = true;
      msg_ = msg;
    }
  }
  bool get(std::string& out) {
    std::lock_guard<std::mutex> lock(mu_);
    out = msg_;
    return set_;
  }

 private:
  std::mutex mu_;
  bool set_ = false;
  std::string msg_;
};

}  // namespace intellect
