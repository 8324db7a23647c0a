#if defined(INTELLECT_HAVE_CUDA) && defined(INTELLECT_HAVE_NCCL)
#include "dist/nccl_group.h"

#include <nccl.h>

#include <cstdlib>

#include "util/error.h"

namespace intellect {

namespace {

void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess)
    fail("NCCL: ", what, ": ", ncclGetErrorString(r),
         " (set NCCL_DEBUG=INFO for NCCL's own account of the failure)");
}

ncclDataType_t nccl_type(nccl::Type t) { return t == nccl::Type::f32 ? ncclFloat32 : ncclBfloat16; }

}  // namespace

NcclGroup::NcclGroup(const std::vector<int>& devices) {
  if (devices.empty()) fail("NCCL: a group needs at least one GPU");
  // Before any communicator exists: NCCL reads it once, at initialisation.
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  std::vector<ncclComm_t> comms(devices.size());
  check(ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()),
        "initialising the node's communicators");
  for (ncclComm_t c : comms) comms_.push_back(c);
}

NcclGroup::~NcclGroup() {
  for (void* c : comms_) ncclCommDestroy(static_cast<ncclComm_t>(c));
}

std::string NcclGroup::version() {
  int v = 0;
  ncclGetVersion(&v);
  return str(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}

namespace nccl {

void all_gather(const void* send, void* recv, size_t count, Type t, void* comm, cudaStream_t s) {
  check(ncclAllGather(send, recv, count, nccl_type(t), static_cast<ncclComm_t>(comm), s), "all-gather");
}

void reduce_scatter_sum(const void* send, void* recv, size_t count, Type t, void* comm, cudaStream_t s) {
  check(ncclReduceScatter(send, recv, count, nccl_type(t), ncclSum, static_cast<ncclComm_t>(comm), s),
        "reduce-scatter");
}

void all_reduce_sum(const void* send, void* recv, size_t count, Type t, void* comm, cudaStream_t s) {
  check(ncclAllReduce(send, recv, count, nccl_type(t), ncclSum, static_cast<ncclComm_t>(comm), s),
        "all-reduce");
}

}  // namespace nccl

}  // namespace intellect
#endif
