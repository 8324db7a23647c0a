#if defined(INTELLECT_HAVE_CUDA) && defined(INTELLECT_HAVE_NCCL)
#include "dist/nccl_group.h"

#include <nccl.h>

#include <atomic>
#include <cstdlib>

#include "util/error.h"

namespace intellect {

namespace {

void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    fail("NCCL: ", what, ": ", ncclGetErrorString(r),
         " (set NCCL_DEBUG=INFO for NCCL's own account of the failure)");
}

ncclDataType_t nccl_type(ElemType t) { return t == ElemType::f32 ? ncclFloat32 : ncclBfloat16; }

// One rank's communicator.
class NcclRank final : public RankCollectives {
 public:
  explicit NcclRank(ncclComm_t comm) : comm_(comm) {}
  ~NcclRank() override {
    if (!aborted_.exchange(true)) ncclCommDestroy(comm_);
  }
  void abort() {
    if (!aborted_.exchange(true)) ncclCommAbort(comm_);  // frees the communicator too
  }
  void all_gather(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) override {
    check(ncclAllGather(send, recv, count, nccl_type(t), comm_, s), "all-gather");
  }
  void reduce_scatter_sum(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) override {
    check(ncclReduceScatter(send, recv, count, nccl_type(t), ncclSum, comm_, s), "reduce-scatter");
  }
  void all_reduce_sum(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) override {
    check(ncclAllReduce(send, recv, count, nccl_type(t), ncclSum, comm_, s), "all-reduce");
  }

 private:
  ncclComm_t comm_;
  std::atomic<bool> aborted_{false};
};

}  // namespace

NcclGroup::NcclGroup(const std::vector<int>& devices) {
  if (devices.empty()) fail("NCCL: a group needs at least one GPU");
  // Before any communicator exists: NCCL reads it once, at initialisation.
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  std::vector<ncclComm_t> comms(devices.size());
  check(ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()),
        "initialising the node's communicators");
  for (ncclComm_t c : comms) ranks_.push_back(std::make_unique<NcclRank>(c));
}

NcclGroup::~NcclGroup() = default;

void NcclGroup::abort() {
  for (auto& r : ranks_) static_cast<NcclRank*>(r.get())->abort();
}

std::string NcclGroup::version() {
  int v = 0;
  ncclGetVersion(&v);
  return str(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}


}  // namespace intellect
#endif
