// A WAN link played on loopback, for tests and benchmarks only: this
// machine's kernel has no netem. Ring traffic a node sends is paced at a rate
// (a serial link: a message leaves once the link has carried the ones before
// it) and handed on a one-way delay after its last byte, with jitter, in
// order (TCP keeps order, so jitter never reorders). A send returns when
// its message starts crossing, as a socket's send returns once its buffer
// holds the bytes, so a sender that brings the next message within one
// message's time keeps the link busy. The rate may differ per peer (a slow
// link to particular nodes, for the ring-order tests). Configured by mesh.emulate_link_* (the
// names say it is an emulation) and said in the run's log.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "dist/ring_allreduce.h"

namespace intellect {

struct LinkEmulation {
  double rate_bytes_per_s = 0.0;          // 0: no cap
  std::chrono::milliseconds delay{0};     // one way
  std::chrono::milliseconds jitter{0};    // each message's delay is uniform in [delay - jitter, delay + jitter]
  uint64_t seed = 1;
  // Peers (by mesh.name) this node's link to is slower: their rate cap
  // instead of rate_bytes_per_s (mesh.emulate_link_slow).
  std::map<std::string, double> peer_rate_bytes_per_s;
  bool on() const { return rate_bytes_per_s > 0 || delay.count() > 0 || !peer_rate_bytes_per_s.empty(); }
  // The link to `peer`: its own rate where it has one.
  LinkEmulation toward(const std::string& peer) const;
  std::string describe() const;  // "100 Mbit/s, 50 ms +- 5 ms one way; 20 Mbit/s to node-2"
};

// mesh.emulate_link_slow: "FROM>TO" (ring traffic FROM sends to TO) and
// "A<>B" (both ways), comma-separated, node names as in mesh.name. Returns
// the peers `self` has a slow link to, each at `rate_bytes_per_s`; an entry
// that is neither form is an Error naming it.
std::map<std::string, double> slow_peers_of(const std::string& self, const std::string& spec,
                                            double rate_bytes_per_s);

// A serial link shared by several senders (a donor's uplink under the lanes
// of its streams): each message leaves once the link has carried the ones
// before it, whichever sender queued them. Thread-safe.
class LinkPacer {
 public:
  explicit LinkPacer(double rate_bytes_per_s) : rate_(rate_bytes_per_s) {}
  // Waits while `bytes` cross the link (at once without a cap). Fails, taking
  // no time on the link, when they would not have crossed by `deadline`.
  void carry(size_t bytes, std::chrono::steady_clock::time_point deadline);

 private:
  double rate_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point available_{};  // when the link is free again
};

// Decorates a ring link: messages to the next node go through the emulated
// link, on a thread of its own; messages from the previous node come from the
// inner link as they are (the previous node's emulation already delayed them).
class EmulatedRingLink final : public RingLink {
 public:
  EmulatedRingLink(RingLink& inner, const LinkEmulation& link);
  ~EmulatedRingLink() override;
  EmulatedRingLink(const EmulatedRingLink&) = delete;
  EmulatedRingLink& operator=(const EmulatedRingLink&) = delete;

  void send_to_next(std::span<const uint8_t> msg, RingClock::time_point deadline) override;
  std::vector<uint8_t> recv_from_prev(RingClock::time_point deadline) override { return inner_.recv_from_prev(deadline); }
  void abort() noexcept override;
  // Waits until every message has left the delay line (before the
  // connection closes), and reports the inner link's failure if it had one.
  void drain(RingClock::time_point deadline);

 private:
  struct Delayed {
    RingClock::time_point due, deadline;
    std::vector<uint8_t> bytes;
  };
  void run_delay_line();

  RingLink& inner_;
  LinkEmulation link_;
  RingClock::time_point available_{};  // when the paced link is free again
  RingClock::time_point last_due_{};   // jitter never lets a message overtake the one before
  uint64_t sent_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Delayed> queue_;
  bool stop_ = false;
  bool sending_ = false;  // the delay line is handing a message to the inner link
  std::exception_ptr error_;
  std::thread line_;
};

}  // namespace intellect
