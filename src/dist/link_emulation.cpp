#include "dist/link_emulation.h"

#include <algorithm>
#include <cstdio>

#include "dist/frame.h"
#include "util/error.h"
#include "util/rng.h"

namespace intellect {

std::string LinkEmulation::describe() const {
  char s[160];
  std::snprintf(s, sizeof s, "%s, %lld ms +- %lld ms one way",
                rate_bytes_per_s > 0 ? str(rate_bytes_per_s * 8 / 1e6, " Mbit/s").c_str() : "no rate cap",
                static_cast<long long>(delay.count()), static_cast<long long>(jitter.count()));
  std::string out = s;
  for (const auto& [peer, rate] : peer_rate_bytes_per_s) out += str("; ", rate * 8 / 1e6, " Mbit/s to ", peer);
  return out;
}

LinkEmulation LinkEmulation::toward(const std::string& peer) const {
  LinkEmulation l = *this;
  l.peer_rate_bytes_per_s.clear();
  if (auto it = peer_rate_bytes_per_s.find(peer); it != peer_rate_bytes_per_s.end()) l.rate_bytes_per_s = it->second;
  return l;
}

std::map<std::string, double> slow_peers_of(const std::string& self, const std::string& spec,
                                            double rate_bytes_per_s) {
  std::map<std::string, double> out;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string entry = spec.substr(start, comma - start);
    start = comma + 1;
    if (entry.empty()) continue;
    const size_t both = entry.find("<>"), one = entry.find('>');
    const bool two_way = both != std::string::npos;
    const size_t at = two_way ? both : one;
    const std::string a = at == std::string::npos ? "" : entry.substr(0, at);
    const std::string b = at == std::string::npos ? "" : entry.substr(at + (two_way ? 2 : 1));
    if (a.empty() || b.empty() || a == b || b.find('>') != std::string::npos || a.find('<') != std::string::npos)
      fail("mesh.emulate_link_slow: \"", entry, "\" is not FROM>TO or A<>B (node names as in mesh.name, "
           "entries separated by commas)");
    if (a == self) out[b] = rate_bytes_per_s;
    if (two_way && b == self) out[a] = rate_bytes_per_s;
  }
  return out;
}

void LinkPacer::carry(size_t bytes, std::chrono::steady_clock::time_point deadline) {
  if (rate_ <= 0) return;
  std::chrono::steady_clock::time_point done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    const auto start = std::max(available_, now);
    done = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                       std::chrono::duration<double>(static_cast<double>(bytes + kFrameHeaderSize) / rate_));
    if (done > deadline)
      fail("emulated link: ", bytes, " bytes would cross it only ",
           std::chrono::duration_cast<std::chrono::milliseconds>(done - deadline).count(), " ms after the deadline");
    available_ = done;
  }
  std::this_thread::sleep_until(done);
}

EmulatedRingLink::EmulatedRingLink(RingLink& inner, const LinkEmulation& link) : inner_(inner), link_(link) {
  if (link_.jitter > link_.delay) fail("link emulation: jitter (", link_.jitter.count(), " ms) exceeds the delay (",
                                       link_.delay.count(), " ms)");
  line_ = std::thread([this] { run_delay_line(); });
}

EmulatedRingLink::~EmulatedRingLink() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (line_.joinable()) line_.join();
}

void EmulatedRingLink::send_to_next(std::span<const uint8_t> msg, RingClock::time_point deadline) {
  // When the message's last byte leaves: it starts once the link has
  // carried the ones before it, and is charged in full (no message crosses
  // for free). The call returns when it starts, as a socket's send returns
  // once its buffer takes the bytes: the sender then has a message's time
  // to bring the next before the link idles. (Returning only when the last
  // byte left, each wake-up's lateness idled the link: 83-88% of the cap
  // at 200 Mbit/s with nothing else in the way, dev VM.)
  RingClock::time_point last_byte = RingClock::now();
  if (link_.rate_bytes_per_s > 0) {
    const RingClock::time_point start = std::max(available_, last_byte);
    available_ = start + std::chrono::duration_cast<RingClock::duration>(std::chrono::duration<double>(
                             static_cast<double>(msg.size() + kFrameHeaderSize) / link_.rate_bytes_per_s));
    last_byte = available_;
    std::this_thread::sleep_until(start);
  }
  auto delay = std::chrono::duration_cast<RingClock::duration>(link_.delay);
  if (link_.jitter.count() > 0) {
    const double u = 2.0 * uniform01(link_.seed, sent_) - 1.0;  // in [-1, 1)
    delay += std::chrono::duration_cast<RingClock::duration>(std::chrono::duration<double, std::milli>(
        u * static_cast<double>(link_.jitter.count())));
  }
  ++sent_;
  std::lock_guard<std::mutex> lock(mu_);
  if (error_) std::rethrow_exception(error_);
  last_due_ = std::max(last_due_, last_byte + delay);
  queue_.push_back({last_due_, deadline, std::vector<uint8_t>(msg.begin(), msg.end())});
  cv_.notify_all();
}

void EmulatedRingLink::abort() noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  inner_.abort();
}

void EmulatedRingLink::drain(RingClock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_until(lock, deadline, [&] { return (queue_.empty() && !sending_) || error_; }))
    fail("ring: the emulated link's delay line did not drain before the deadline");
  if (error_) std::rethrow_exception(error_);
}

// Hands messages to the inner link in order, each at its due time.
void EmulatedRingLink::run_delay_line() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopped with nothing left
    if (stop_ && error_) return;
    const RingClock::time_point due = queue_.front().due;
    if (RingClock::now() < due) {
      cv_.wait_until(lock, due, [&] { return stop_ && queue_.empty(); });
      continue;
    }
    Delayed d = std::move(queue_.front());
    queue_.pop_front();
    sending_ = true;  // off the queue but not yet handed on: drain() must still wait
    lock.unlock();
    try {
      inner_.send_to_next(d.bytes, d.deadline);
    } catch (...) {
      lock.lock();
      sending_ = false;
      error_ = std::current_exception();
      queue_.clear();
      cv_.notify_all();
      return;
    }
    lock.lock();
    sending_ = false;
    cv_.notify_all();  // drain() may be waiting for an empty line
  }
}

}  // namespace intellect
