// The pieces that let one ring lane keep its link busy while its codec work
// runs on several threads (ring_allreduce.h):
//   - OrderedSendQueue: outgoing messages are built out of order by the
//     codec workers, but a ring link must carry them in the schedule's order
//     (each rank checks every header against the order it expects), so each
//     carries its place in that order and the sender takes them strictly in
//     sequence.
//   - CodecPool: a few threads that run a lane's jobs (check, decode and add,
//     re-encode one received message), at most `max_in_flight` at a time, so
//     the receiving thread never holds more than a few messages out of the
//     transport's inbox (whose byte budget is what pushes back on a fast
//     sender).
// Owned by one ring call: the receiving thread submits and puts, the sender
// thread pops, the pool's workers run jobs and put. A job that throws hands
// its exception to the pool's on_error and stops the pool: stop() drops what
// is queued and makes later submits return false.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace intellect {

class OrderedSendQueue {
 public:
  // Message number `seq` of the lane's schedule (0, 1, 2, ... without gaps).
  void put(uint64_t seq, std::vector<uint8_t> msg) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.emplace(seq, std::move(msg));
    }
    cv_.notify_all();
  }
  // The next message in sequence; false once every message before the end
  // given to close() has been taken, or after stop().
  bool pop(std::vector<uint8_t>& out) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stopped_ || next_ == end_ || ready_.count(next_) != 0; });
    if (stopped_ || next_ == end_) return false;
    auto it = ready_.find(next_);
    out = std::move(it->second);
    ready_.erase(it);
    ++next_;
    return true;
  }
  void close(uint64_t end) {  // no message numbered `end` or later will come
    std::lock_guard<std::mutex> lock(mu_);
    end_ = end;
    cv_.notify_all();
  }
  void stop() {  // abandon what is queued
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    ready_.clear();
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::vector<uint8_t>> ready_;
  uint64_t next_ = 0, end_ = UINT64_MAX;
  bool stopped_ = false;
};

template <class Job>
class CodecPool {
 public:
  // threads ≤ 1: no worker threads; submit() runs each job on the caller's
  // thread (a lane's codec work then stays on its receiving thread).
  CodecPool(int threads, size_t max_in_flight, std::function<void(Job&)> run,
            std::function<void(std::exception_ptr)> on_error)
      : run_(std::move(run)), on_error_(std::move(on_error)), max_in_flight_(max_in_flight < 1 ? 1 : max_in_flight) {
    for (int i = 0; threads > 1 && i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~CodecPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  CodecPool(const CodecPool&) = delete;
  CodecPool& operator=(const CodecPool&) = delete;

  // Blocks while max_in_flight jobs are queued or running. False (the job
  // dropped) once stopped.
  bool submit(Job job) {
    if (workers_.empty()) {
      if (stopped()) return false;
      execute(job);
      return true;
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stopped_ || in_flight_ < max_in_flight_; });
    if (stopped_) return false;
    ++in_flight_;
    queue_.push_back(std::move(job));
    cv_.notify_all();
    return true;
  }
  // Waits until every submitted job has finished (or the pool was stopped
  // and its running jobs finished).
  void wait_idle() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
  }
  void stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    in_flight_ -= queue_.size();
    queue_.clear();
    cv_.notify_all();
  }
  bool stopped() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopped_;
  }

 private:
  void execute(Job& job) {
    try {
      run_(job);
    } catch (...) {
      on_error_(std::current_exception());
      stop();  // the round has failed: the other jobs are moot
    }
  }
  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
      if (queue_.empty()) return;
      Job job = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      execute(job);
      lock.lock();
      --in_flight_;
      cv_.notify_all();
    }
  }

  std::function<void(Job&)> run_;
  std::function<void(std::exception_ptr)> on_error_;
  const size_t max_in_flight_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  size_t in_flight_ = 0;
  bool stopped_ = false, closing_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace intellect
