// A small pool of threads that open (decrypt and authenticate) sealed frames
// for one Transport (transport.h), so the frames of all its connections, and
// the frames of one connection, are opened on several cores at once instead
// of one after another on the transport's event-loop thread.
//
// The pool knows nothing of connections or order: a job is "open this frame
// at this position and hand the result back". The transport gives each frame
// its position (its AEAD nonce) on the loop thread, in arrival order, before
// submitting it, and puts the results back in that order per connection
// (transport.cpp, TransportLoop::frame_opened), so a frame that opens on a
// worker out of turn waits for the ones before it.
//
// Threads: run() is called by the transport's loop thread (any thread may
// call it); the jobs run on the pool's own threads, or on the caller's thread
// when the pool has no threads, is stopped, or has kMaxQueuedJobs waiting;
// stop() is called once, by the transport's destructor.
//
// Bounds: the queue holds at most kMaxQueuedJobs; beyond that run() opens
// the frame on the caller's thread, which slows the loop thread and with it
// the reading of sockets (backpressure, never an unbounded queue or a drop).
// The bytes waiting are bounded before that by the transport, which counts a
// frame being opened against its connection's inbox budget and stops reading
// that socket when the budget is spent.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace intellect {

class FrameOpeners {
 public:
  static constexpr size_t kMaxQueuedJobs = 4096;
  using Job = std::function<void()>;

  // `threads` workers; 0 runs every job on the caller's thread (the loop
  // thread opens every frame itself, as before this pool existed).
  explicit FrameOpeners(size_t threads);
  ~FrameOpeners();  // stop()
  FrameOpeners(const FrameOpeners&) = delete;
  FrameOpeners& operator=(const FrameOpeners&) = delete;

  // The pool size a transport gets when its options leave it to the
  // hardware: a quarter of the cores, at least 2 and at most 8. Several
  // processes may share a host (4 nodes on a 16-core host get 4 each), and
  // a worker that has nothing to open sleeps.
  static size_t default_threads();

  // Queues the job, or runs it here (see the header comment). Never blocks
  // on another job.
  void run(Job job);

  // Waits for the jobs that are running (each opens one frame, so this is
  // bounded by the largest frame's open time), drops the queued ones and
  // joins the workers. Jobs run() afterwards run on the caller's thread.
  // Idempotent.
  void stop();

  size_t threads() const { return workers_.size(); }

 private:
  void work();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace intellect
