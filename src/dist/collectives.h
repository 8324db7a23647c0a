// The three collectives FSDP needs, as one rank of a node's group sees them.
// Every rank issues the same calls in the same order, each on its own CUDA
// stream; a call is queued on the stream and returns (it may block the host
// until every rank has called it, as the shared-GPU group does).
//
// Two groups provide them: NcclGroup (dist/nccl_group.h), the real one, one
// GPU per rank; and SharedGpuGroup (dist/shared_gpu_group.h), every rank on
// one GPU in one process, for testing FSDP where only one GPU is lent.
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include <cstddef>
#include <string>

#include "kernels/cuda_types.h"

namespace intellect {

enum class ElemType { f32, bf16 };

class RankCollectives {
 public:
  virtual ~RankCollectives() = default;
  // recv[rank·count + i] = send_of_rank[i] for every rank.
  virtual void all_gather(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) = 0;
  // recv[i] = Σ over ranks of send_of_rank[rank·count + i].
  virtual void reduce_scatter_sum(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) = 0;
  // recv[i] = Σ over ranks of send_of_rank[i] (send may be recv).
  virtual void all_reduce_sum(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) = 0;
};

// A node's ranks together: one RankCollectives each, and abort(), which
// releases every rank waiting in a collective (their calls then fail) once
// one rank has failed alone. After abort() the group is unusable.
class CollectiveGroup {
 public:
  virtual ~CollectiveGroup() = default;
  virtual int size() const = 0;
  virtual RankCollectives* rank(int r) const = 0;
  virtual void abort() = 0;  // any thread; idempotent
  virtual std::string name() const = 0;
};

}  // namespace intellect
#endif
