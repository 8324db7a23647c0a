#include "dist/message_buffers.h"

namespace intellect {

MessageBuffers& MessageBuffers::process() {
  static MessageBuffers pool;
  return pool;
}

std::vector<uint8_t> MessageBuffers::take_capacity(size_t n) {
  if (n >= kMinBytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(n);
    if (it != free_.end() && it->first <= 2 * n) {
      std::vector<uint8_t> v = std::move(it->second);
      held_ -= it->first;
      free_.erase(it);
      ++reused_;
      v.clear();
      return v;
    }
  }
  std::vector<uint8_t> v;
  // A little more than asked, in whole pages: a frame's tag, a signature,
  // or the next chunk's few more table bytes still fit.
  constexpr size_t kPage = 4096;
  v.reserve(n >= kMinBytes ? (n + 256 + kPage - 1) / kPage * kPage : n);
  return v;
}

std::vector<uint8_t> MessageBuffers::take(size_t n) {
  std::vector<uint8_t> v = take_capacity(n);
  v.resize(n);
  return v;
}

void MessageBuffers::give(std::vector<uint8_t>&& v) {
  const size_t cap = v.capacity();
  if (cap < kMinBytes) return;
  std::vector<uint8_t> keep = std::move(v);
  std::vector<std::vector<uint8_t>> evicted;  // freed after the lock is released
  std::lock_guard<std::mutex> lock(mu_);
  if (cap > max_ / 4) return;  // one buffer may not take most of the pool (`keep` is freed after the lock)
  // Full: kept buffers at least as large as this one go first, largest
  // first, so that a burst of large ones (a donor's 4 MiB state chunks)
  // cannot crowd out the rounds' messages for good; a buffer larger than
  // every kept one is not kept.
  while (held_ + cap > max_ && !free_.empty() && std::prev(free_.end())->first >= cap) {
    auto largest = std::prev(free_.end());
    held_ -= largest->first;
    evicted.push_back(std::move(largest->second));
    free_.erase(largest);
  }
  if (held_ + cap > max_) return;
  held_ += cap;
  free_.emplace(cap, std::move(keep));
}

void MessageBuffers::set_max_bytes(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  max_ = bytes;
  while (held_ > max_ && !free_.empty()) {
    held_ -= free_.begin()->first;
    free_.erase(free_.begin());
  }
}

size_t MessageBuffers::held_bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return held_;
}

uint64_t MessageBuffers::reused() {
  std::lock_guard<std::mutex> lock(mu_);
  return reused_;
}

}  // namespace intellect
