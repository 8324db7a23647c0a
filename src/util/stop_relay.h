// Relays a stop request (the flag a signal handler sets: it may do nothing
// but set it) to code that must act on it while the thread that reads the
// flag is blocked elsewhere: `on_stop` runs once, on the relay's own
// thread, within `every` of the flag being set. A blocking DiLoCo round
// (diloco.overlap none) holds the training thread inside the mesh, so a
// SIGTERM reaches the mesh through this (MeshNode::cancel).
//
// Threads. The relay's thread polls the flag and runs on_stop; the owner
// constructs and destroys it (the destructor stops and joins the thread,
// waiting for an on_stop that runs). fired(): any thread.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace intellect {

class StopRelay {
 public:
  // `stop` outlives this object.
  StopRelay(const std::atomic<bool>& stop, std::function<void()> on_stop,
            std::chrono::milliseconds every = std::chrono::milliseconds(50));
  ~StopRelay();
  StopRelay(const StopRelay&) = delete;
  StopRelay& operator=(const StopRelay&) = delete;

  bool fired() const { return fired_.load(); }  // on_stop has run (or runs now)

 private:
  void loop();

  const std::atomic<bool>& stop_;
  std::function<void()> on_stop_;
  const std::chrono::milliseconds every_;
  std::atomic<bool> fired_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool closing_ = false;  // under mu_: the owner is destroying the relay
  std::thread thread_;
};

}  // namespace intellect
