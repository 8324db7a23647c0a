#include "dist/round_buffers.h"

#include <utility>

namespace intellect {

RoundBuffers& RoundBuffers::process() {
  static RoundBuffers pool;
  return pool;
}

ByteBuffer RoundBuffers::take(size_t n) {
  ByteBuffer b;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (enabled_ && spare_.capacity() >= n && spare_.capacity() / 2 <= n) {
      b = std::move(spare_);
      spare_ = ByteBuffer();
      ++reused_;
    }
  }
  b.resize(n);  // within capacity when recycled: no allocation, no bytes written
  return b;
}

void RoundBuffers::give(ByteBuffer&& b) {
  ByteBuffer old;  // freed outside the lock
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!enabled_ || b.capacity() == 0) {
      old = std::move(b);
    } else {
      old = std::move(spare_);
      spare_ = std::move(b);
      spare_.clear();
    }
  }
}

void RoundBuffers::set_enabled(bool on) {
  ByteBuffer old;
  std::lock_guard<std::mutex> lock(mu_);
  enabled_ = on;
  if (!on) old = std::move(spare_), spare_ = ByteBuffer();
}

size_t RoundBuffers::held_bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return spare_.capacity();
}

uint64_t RoundBuffers::reused() {
  std::lock_guard<std::mutex> lock(mu_);
  return reused_;
}

}  // namespace intellect
