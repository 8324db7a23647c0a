#ifdef INTELLECT_HAVE_CUDA
#include "dist/fsdp_weights.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/grad_shard.h"
#include "util/error.h"

namespace intellect {

using cuda::bf16;

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: FSDP: ", what, ": ", cudaGetErrorString(e));
}
}  // namespace

FsdpWeights::FsdpWeights(const ParamLayout& layout, int rank, int world, RankCollectives* collectives,
                         bool reduce_bf16, cudaStream_t compute, const Alloc& alloc)
    : plan_(layout, world), world_(world), comm_(collectives), reduce_bf16_(reduce_bf16), compute_(compute) {
  if (rank < 0 || rank >= world) fail("FSDP rank ", rank, " is outside the ", world, " GPUs of the node");
  if (layout.lm_head() == layout.embed())
    fail("FSDP over several GPUs needs untied embeddings (model.tie_embeddings=false): the embedding and "
         "the head are separate flat units");
  if (!comm_) fail("FSDP rank ", rank, " of ", world, " has no collectives (an NCCL communicator)");
  pieces_ = plan_.pieces(rank);
  size_t block_max = 0, big_max = 0, shard_max = 0;
  for (size_t u = 0; u < plan_.units().size(); ++u) {
    const size_t padded = plan_.shard_len(u) * world;
    if (u == 0 || u + 1 == plan_.units().size()) big_max = std::max(big_max, padded);
    else block_max = std::max(block_max, padded);
    shard_max = std::max(shard_max, plan_.shard_len(u));
  }
  for (int s = 0; s < 3; ++s) {
    const size_t n = s == kBigSlot ? big_max : block_max;
    slots_[s].buf = alloc(n * sizeof(bf16));
    grad_slots_[s].buf = alloc(n * sizeof(float));
    for (Slot* x : {&slots_[s], &grad_slots_[s]}) {
      check(cudaEventCreateWithFlags(&x->ready, cudaEventDisableTiming), "event");
      check(cudaEventCreateWithFlags(&x->free, cudaEventDisableTiming), "event");
    }
  }
  rs_out_ = alloc(shard_max * sizeof(float));
  if (reduce_bf16_) rs_in_bf16_ = static_cast<bf16*>(alloc(std::max(big_max, block_max) * sizeof(bf16)));
  check(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking), "comm stream");
  check(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming), "event");
  check(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming), "event");
}

FsdpWeights::~FsdpWeights() {
  if (comm_stream_) cudaStreamSynchronize(comm_stream_);
  for (Slot* x : {&slots_[0], &slots_[1], &slots_[2], &grad_slots_[0], &grad_slots_[1], &grad_slots_[2]}) {
    if (x->ready) cudaEventDestroy(x->ready);
    if (x->free) cudaEventDestroy(x->free);
  }
  if (comm_done_) cudaEventDestroy(comm_done_);
  if (compute_done_) cudaEventDestroy(compute_done_);
  if (comm_stream_) cudaStreamDestroy(comm_stream_);
}

void FsdpWeights::bind(bf16* params, float* grads) {
  params_ = params;
  grads_ = grads;
}

int FsdpWeights::slot_of(int unit) const {
  const int last = static_cast<int>(plan_.units().size()) - 1;
  return unit == 0 || unit == last ? kBigSlot : (unit - 1) % 2;  // blocks alternate
}

void FsdpWeights::wait_for_comm() {
  check(cudaEventRecord(comm_done_, comm_stream_), "comm event");
  check(cudaStreamWaitEvent(compute_, comm_done_, 0), "wait comm");
}

void FsdpWeights::params_changed() {
  for (Slot& s : slots_) s.unit = -1;
}

void FsdpWeights::prefetch(int unit) {
  Slot& s = slots_[slot_of(unit)];
  if (s.unit == unit) return;  // still resident from an earlier use
  const size_t n = plan_.shard_len(unit);
  check(cudaStreamWaitEvent(comm_stream_, s.free, 0), "wait slot");
  comm_->all_gather(params_ + plan_.local_offset(unit), s.buf, n, ElemType::bf16, comm_stream_);
  check(cudaEventRecord(s.ready, comm_stream_), "slot event");
  s.unit = unit;
}

UnitView FsdpWeights::acquire(int unit) {
  prefetch(unit);
  const Slot& s = slots_[slot_of(unit)];
  check(cudaStreamWaitEvent(compute_, s.ready, 0), "wait gather");
  UnitView v;
  v.p = static_cast<const bf16*>(s.buf);
  v.base = plan_.units()[unit].range.begin;
  return v;
}

void FsdpWeights::release(int unit) {
  check(cudaEventRecord(slots_[slot_of(unit)].free, compute_), "release");
}

// A zeroed fp32 buffer for the unit's whole gradient; grad_end reduces it.
void FsdpWeights::grad_begin(UnitView& w, int unit) {
  Slot& g = grad_slots_[slot_of(unit)];
  check(cudaStreamWaitEvent(compute_, g.free, 0), "wait grad slot");
  check(cudaMemsetAsync(g.buf, 0, plan_.shard_len(unit) * world_ * sizeof(float), compute_), "zero");
  w.g = g.buf;
  w.g_bf16 = false;
  w.accumulate = true;
  w.base = plan_.units()[unit].range.begin;
}

UnitView FsdpWeights::gradients_of(int unit) {
  UnitView v;
  grad_begin(v, unit);
  return v;
}

// Reduce-scatter the unit's gradient and add this rank's part into its shard.
void FsdpWeights::grad_end(int unit) {
  Slot& g = grad_slots_[slot_of(unit)];
  const size_t n = plan_.shard_len(unit);
  float* shard = grads_ + plan_.local_offset(unit);
  check(cudaEventRecord(g.ready, compute_), "grad event");
  check(cudaStreamWaitEvent(comm_stream_, g.ready, 0), "wait grad");
  if (reduce_bf16_) {
    cuda::to_bf16(rs_in_bf16_, static_cast<const float*>(g.buf), static_cast<int64_t>(n * world_), comm_stream_);
    comm_->reduce_scatter_sum(rs_in_bf16_, rs_out_, n, ElemType::bf16, comm_stream_);
    cuda::add_into(shard, static_cast<const bf16*>(rs_out_), static_cast<int64_t>(n), comm_stream_);
  } else {
    comm_->reduce_scatter_sum(g.buf, rs_out_, n, ElemType::f32, comm_stream_);
    cuda::add_into(shard, static_cast<const float*>(rs_out_), static_cast<int64_t>(n), comm_stream_);
  }
  check(cudaEventRecord(g.free, comm_stream_), "grad free");
}

// The clip needs the norm over every shard: Σg² here, summed over the node,
// then the whole step at once.
void FsdpWeights::optimizer_step(CudaAdamW& adam, const cuda::AdamWArgs& args) {
  wait_for_comm();
  adam.sum_squares(grads_, false, compute_);
  // On the comm stream: a rank's collectives stay in one stream's order.
  check(cudaEventRecord(compute_done_, compute_), "event");
  check(cudaStreamWaitEvent(comm_stream_, compute_done_, 0), "wait");
  comm_->all_reduce_sum(adam.sum_squares_dev(), adam.sum_squares_dev(), 1, ElemType::f32, comm_stream_);
  wait_for_comm();
  adam.step(params_, grads_, false, args, compute_, adam.sum_squares_dev());
  // The next gathers read the updated shards.
  check(cudaEventRecord(compute_done_, compute_), "event");
  check(cudaStreamWaitEvent(comm_stream_, compute_done_, 0), "wait");
  params_changed();
}

}  // namespace intellect
#endif
