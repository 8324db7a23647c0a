// FSDP's collectives for N ranks that share one GPU in one process: a test
// double for NcclGroup where only one GPU is lent (NCCL refuses two ranks on
// one device). Selected by INTELLECT_FSDP_SHARED_GPU=1 (train/backend_cuda.cpp);
// never used by a real run, and slower than one GPU alone.
//
// Each call is a rendezvous of the ranks' host threads, with a deadline: every
// rank records that its input is ready on its stream, waits at a barrier for
// the others, makes its stream wait for every rank's input, computes its
// result into scratch of its own (sums in fp32, bf16 rounded once at the end,
// where NCCL may round per hop), records that it has read the others' inputs,
// meets them at a second barrier, and only then, after every rank has read,
// writes its result (so in-place calls and inputs reused right after are safe).
//
// Threads: one host thread per rank (FsdpBackend's), each calling only its own
// rank's object; the group's barrier is the only state they share.
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "dist/collectives.h"

namespace intellect {

class SharedGpuGroup final : public CollectiveGroup {
 public:
  explicit SharedGpuGroup(int world, std::chrono::milliseconds deadline = std::chrono::seconds(120));
  ~SharedGpuGroup() override;
  SharedGpuGroup(const SharedGpuGroup&) = delete;
  SharedGpuGroup& operator=(const SharedGpuGroup&) = delete;

  int size() const override { return static_cast<int>(ranks_.size()); }
  RankCollectives* rank(int r) const override;
  // Every rank waiting at a barrier, and every later call, fails at once.
  void abort() override;
  std::string name() const override {
    return "one shared GPU, in-process collectives (INTELLECT_FSDP_SHARED_GPU=1, for tests)";
  }

  // What a rank has put up for the call in progress (read by the others
  // between the two barriers of that call).
  struct Posted {
    const void* send = nullptr;
    cudaEvent_t ready = nullptr, read_done = nullptr;
  };
  Posted& posted(int r) { return posted_[r]; }
  // Blocks until every rank has arrived; fails after the deadline, naming
  // the call, so one rank's failure cannot hang the others for ever.
  void barrier(int rank, const char* call);

 private:
  std::vector<Posted> posted_;
  std::vector<std::unique_ptr<RankCollectives>> ranks_;
  std::chrono::milliseconds deadline_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
};

}  // namespace intellect
#endif
