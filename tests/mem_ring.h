// In-memory ring links for the ring tests: one FIFO channel per ring edge,
// one thread per rank, with injectable faults.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "dist/ring_allreduce.h"
#include "util/error.h"

namespace intellect::memring {

class Channel {
 public:
  void send(std::span<const uint8_t> m) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) fail("channel closed by the peer");
    q_.emplace_back(m.begin(), m.end());
    cv_.notify_all();
  }
  std::vector<uint8_t> recv(RingClock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return closed_ || !q_.empty(); })) fail("receive timed out");
    if (closed_) fail("channel closed by the peer");
    auto m = std::move(q_.front());
    q_.pop_front();
    return m;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> q_;
  bool closed_ = false;
};

// Rank r sends on channel r and receives on channel r − 1. Faults: after
// `die_after` sends the link fails and closes (a crashed peer); after
// `stall_after` sends it silently drops everything (a hung peer); `corrupt`
// rewrites each outgoing message (a tampering or broken peer).
struct MemLink : RingLink {
  Channel *out = nullptr, *in = nullptr;
  int die_after = -1, stall_after = -1;
  std::function<void(std::vector<uint8_t>&)> corrupt;
  std::atomic<uint64_t> bytes{0};
  std::atomic<int> sent{0};
  void send_to_next(std::span<const uint8_t> m, RingClock::time_point) override {
    const int k = sent++;
    // The ring aborts the link (closing both channels) when this throws.
    if (die_after >= 0 && k >= die_after) fail("link died (injected)");
    if (stall_after >= 0 && k >= stall_after) return;
    bytes += m.size();
    if (corrupt) {
      std::vector<uint8_t> c(m.begin(), m.end());
      corrupt(c);
      out->send(c);
      return;
    }
    out->send(m);
  }
  std::vector<uint8_t> recv_from_prev(RingClock::time_point deadline) override { return in->recv(deadline); }
  void abort() noexcept override {
    out->close();
    in->close();
  }
};

struct Ring {
  std::vector<std::unique_ptr<Channel>> ch;
  std::vector<std::unique_ptr<MemLink>> links;
  explicit Ring(int n) {
    for (int i = 0; i < n; ++i) ch.push_back(std::make_unique<Channel>());
    for (int i = 0; i < n; ++i) {
      links.push_back(std::make_unique<MemLink>());
      links[i]->out = ch[i].get();
      links[i]->in = ch[(i + n - 1) % n].get();
    }
  }
};

}  // namespace intellect::memring
