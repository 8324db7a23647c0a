#include "data/prefetch.h"

#include "util/error.h"

namespace intellect {

PrefetchLoader::PrefetchLoader(const LoaderOptions& options, int depth)
    : loader_(options), depth_(depth), position_(loader_.position()) {
  if (depth < 0) fail("data loader: prefetch depth must be 0 (off) or more, got ", depth);
}

PrefetchLoader::~PrefetchLoader() { stop(); }

void PrefetchLoader::start() {
  stopping_ = false;
  worker_ = std::thread([this] { work(); });
}

void PrefetchLoader::stop() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  space_.notify_all();
  worker_.join();
  queue_.clear();
}

void PrefetchLoader::work() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      space_.wait(lock, [&] { return stopping_ || queue_.size() < static_cast<size_t>(depth_); });
      if (stopping_) return;
    }
    // Read outside the lock: this is the part that overlaps the training step.
    Item item;
    try {
      loader_.next(item.batch);
      item.after = loader_.position();
    } catch (...) {
      item.error = std::current_exception();
    }
    const bool failed = item.error != nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(item));
    }
    ready_.notify_one();
    if (failed) return;  // the error stays queued; next() rethrows it every time
  }
}

void PrefetchLoader::next(Batch& batch) {
  if (depth_ == 0) {
    loader_.next(batch);
    position_ = loader_.position();
    return;
  }
  if (!worker_.joinable()) start();
  std::unique_lock<std::mutex> lock(mu_);
  ready_.wait(lock, [&] { return !queue_.empty(); });
  if (queue_.front().error) std::rethrow_exception(queue_.front().error);
  Item item = std::move(queue_.front());
  queue_.pop_front();
  lock.unlock();
  space_.notify_one();
  batch = std::move(item.batch);
  position_ = std::move(item.after);
}

void PrefetchLoader::seek(const LoaderPosition& p) {
  stop();
  loader_.seek(position_);  // undo the read-ahead, so a refused p changes nothing
  loader_.seek(p);
  position_ = loader_.position();
}

}  // namespace intellect
