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
#include <string>
#include <vector>

#include "kernels/cuda_types.h"

namespace intellect {

class NcclGroup {
 public:
  // One communicator per device in `devices` (rank i drives devices[i]).
  explicit NcclGroup(const std::vector<int>& devices);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int size() const { return static_cast<int>(comms_.size()); }
  void* comm(int rank) const { return comms_.at(rank); }
  static std::string version();

 private:
  std::vector<void*> comms_;
};

namespace nccl {
enum class Type { f32, bf16 };
// recv[rank·count + i] = send_of_rank[i] for every rank.
void all_gather(const void* send, void* recv, size_t count, Type t, void* comm, cudaStream_t s);
// recv[i] = Σ over ranks of send_of_rank[rank·count + i].
void reduce_scatter_sum(const void* send, void* recv, size_t count, Type t, void* comm, cudaStream_t s);
void all_reduce_sum(const void* send, void* recv, size_t count, Type t, void* comm, cudaStream_t s);
}  // namespace nccl

}  // namespace intellect
#endif
