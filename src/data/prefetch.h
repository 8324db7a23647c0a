// Reads batches ahead on a background thread, so the training loop does not
// wait on page faults and copies: a bounded queue of ready batches, filled
// by one worker that owns the DataLoader while it runs.
//
// position() is where the next batch handed to the caller starts, never what
// the worker has read ahead: each queued batch carries the loader's position
// after it, and the position advances only when the caller takes the batch.
// A run that saves position() after its step and later seeks to it reads
// exactly the batches an uninterrupted run would.
//
// An error in the worker (a bad token id, a failed read) is queued after the
// batches made before it and rethrown by next() on the caller's thread with
// its message; the worker stops there. The destructor stops and joins the
// worker. next(), position() and seek() are for one consumer thread.
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "data/dataloader.h"

namespace intellect {

class PrefetchLoader {
 public:
  // depth: batches kept ready (at least 1); 0 reads on the caller's thread.
  PrefetchLoader(const LoaderOptions& options, int depth);
  ~PrefetchLoader();
  PrefetchLoader(const PrefetchLoader&) = delete;
  PrefetchLoader& operator=(const PrefetchLoader&) = delete;

  void next(Batch& batch);
  LoaderPosition position() const { return position_; }
  // Drops what was read ahead; the next batch is the one at p.
  void seek(const LoaderPosition& p);

  const DataLoader& loader() const { return loader_; }  // its datasets and shares

 private:
  struct Item {
    Batch batch;
    LoaderPosition after;
    std::exception_ptr error;
  };
  void start();
  void stop();
  void work();

  DataLoader loader_;  // touched only by the worker while it runs
  int depth_;
  LoaderPosition position_;

  std::thread worker_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<Item> queue_;
  bool stopping_ = false;
};

}  // namespace intellect
