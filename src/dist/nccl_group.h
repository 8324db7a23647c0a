// The NCCL communicators of one node's GPUs, all driven by one process (one
// host thread per GPU), and the few collectives FSDP needs. nccl.h stays out
// of this header: communicators travel as opaque handles.
//
// NVLink multicast (NVLS) is switched off before NCCL initialises, whatever
// the environment says: on shared hosts a program that uses it can take the
// host's GPUs out of service.
#pragma once
#if defined(INTELLECT_HAVE_CUDA) && defined(INTELLECT_HAVE_NCCL)
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "dist/collectives.h"
#include "kernels/cuda_types.h"

namespace intellect {

class NcclGroup final : public CollectiveGroup {
 public:
  // One communicator per device in `devices` (rank i drives devices[i]).
  explicit NcclGroup(const std::vector<int>& devices);
  ~NcclGroup() override;
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int size() const override { return static_cast<int>(ranks_.size()); }
  RankCollectives* rank(int r) const override { return ranks_.at(r).get(); }
  // ncclCommAbort on every communicator: operations in flight end, and a
  // rank blocked on one (in a stream synchronisation) returns.
  void abort() override;
  std::string name() const override { return "NCCL " + version(); }
  static std::string version();

 private:
  std::vector<std::unique_ptr<RankCollectives>> ranks_;
};

}  // namespace intellect
#endif
