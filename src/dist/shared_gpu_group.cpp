#ifdef INTELLECT_HAVE_CUDA
#include "dist/shared_gpu_group.h"

#include <cuda_runtime.h>

#include "kernels/grad_shard.h"
#include "util/error.h"

namespace intellect {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: shared-GPU collectives: ", what, ": ", cudaGetErrorString(e));
}

size_t elem_bytes(ElemType t) { return t == ElemType::f32 ? 4 : 2; }

class SharedGpuRank final : public RankCollectives {
 public:
  SharedGpuRank(SharedGpuGroup& group, int rank) : group_(group), rank_(rank) {
    SharedGpuGroup::Posted& p = group_.posted(rank_);
    check(cudaEventCreateWithFlags(&p.ready, cudaEventDisableTiming), "event");
    check(cudaEventCreateWithFlags(&p.read_done, cudaEventDisableTiming), "event");
  }
  ~SharedGpuRank() override {
    SharedGpuGroup::Posted& p = group_.posted(rank_);
    if (scratch_) cudaFree(scratch_);
    if (p.ready) cudaEventDestroy(p.ready);
    if (p.read_done) cudaEventDestroy(p.read_done);
  }

  void all_gather(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) override {
    const size_t bytes = count * elem_bytes(t);
    const uint8_t* scratch = gather_inputs(send, s, "all-gather", [&](int r, const void* in) {
      copy(static_cast<uint8_t*>(scratch_) + r * bytes, in, bytes, s);
    }, bytes * group_.size());
    finish("all-gather", s, [&] { copy(recv, scratch, bytes * group_.size(), s); });
  }

  void reduce_scatter_sum(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) override {
    sum(send, recv, count, count * elem_bytes(t) * rank_, t, s, "reduce-scatter");
  }

  void all_reduce_sum(const void* send, void* recv, size_t count, ElemType t, cudaStream_t s) override {
    sum(send, recv, count, 0, t, s, "all-reduce");
  }

 private:
  // recv = Σ over ranks of (their send + offset_bytes)[0, count), in fp32.
  void sum(const void* send, void* recv, size_t count, size_t offset_bytes, ElemType t, cudaStream_t s,
           const char* call) {
    const auto n = static_cast<int64_t>(count);
    gather_inputs(send, s, call, [&](int r, const void* in) {
      const void* part = static_cast<const uint8_t*>(in) + offset_bytes;
      if (r == 0) check(cudaMemsetAsync(scratch_, 0, count * sizeof(float), s), "zero");
      if (t == ElemType::f32) cuda::add_into(static_cast<float*>(scratch_), static_cast<const float*>(part), n, s);
      else cuda::add_into(static_cast<float*>(scratch_), static_cast<const cuda::bf16*>(part), n, s);
    }, count * sizeof(float));
    finish(call, s, [&] {
      if (t == ElemType::f32) copy(recv, scratch_, count * sizeof(float), s);
      else cuda::to_bf16(static_cast<cuda::bf16*>(recv), static_cast<const float*>(scratch_), n, s);
    });
  }

  // First half of a call: post this rank's input, meet the others, and read
  // every rank's input (visit(r, input), in rank order) into scratch.
  template <class Visit>
  const uint8_t* gather_inputs(const void* send, cudaStream_t s, const char* call, Visit visit, size_t scratch_bytes) {
    reserve(scratch_bytes);
    SharedGpuGroup::Posted& mine = group_.posted(rank_);
    mine.send = send;
    check(cudaEventRecord(mine.ready, s), "input ready");
    group_.barrier(rank_, call);
    for (int r = 0; r < group_.size(); ++r) {
      check(cudaStreamWaitEvent(s, group_.posted(r).ready, 0), "wait for an input");
      visit(r, group_.posted(r).send);
    }
    check(cudaEventRecord(mine.read_done, s), "inputs read");
    return static_cast<const uint8_t*>(scratch_);
  }

  // Second half: once every rank has read every input, write the result.
  template <class Write>
  void finish(const char* call, cudaStream_t s, Write write) {
    group_.barrier(rank_, call);
    for (int r = 0; r < group_.size(); ++r)
      check(cudaStreamWaitEvent(s, group_.posted(r).read_done, 0), "wait until the inputs are read");
    write();
  }

  // Grows only: the first calls of a run size it (a test double; NCCL keeps
  // its own buffers).
  void reserve(size_t bytes) {
    if (bytes <= capacity_) return;
    if (scratch_) {
      check(cudaDeviceSynchronize(), "growing scratch");
      check(cudaFree(scratch_), "growing scratch");
    }
    check(cudaMalloc(&scratch_, bytes), "scratch");
    capacity_ = bytes;
  }

  static void copy(void* dst, const void* src, size_t bytes, cudaStream_t s) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copy");
  }

  SharedGpuGroup& group_;
  int rank_;
  void* scratch_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace

SharedGpuGroup::SharedGpuGroup(int world, std::chrono::milliseconds deadline)
    : posted_(world), deadline_(deadline) {
  if (world < 1) fail("shared-GPU collectives: need at least one rank, got ", world);
  for (int r = 0; r < world; ++r) ranks_.push_back(std::make_unique<SharedGpuRank>(*this, r));
}

SharedGpuGroup::~SharedGpuGroup() { ranks_.clear(); }

RankCollectives* SharedGpuGroup::rank(int r) const { return ranks_.at(r).get(); }

void SharedGpuGroup::abort() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = true;
  cv_.notify_all();
}

void SharedGpuGroup::barrier(int rank, const char* call) {
  std::unique_lock<std::mutex> lock(mu_);
  auto aborted = [&] {
    fail("shared-GPU collectives: rank ", rank, " gave up its ", call,
         ": another rank failed and the group was aborted");
  };
  if (aborted_) aborted();
  const uint64_t gen = generation_;
  if (++arrived_ == size()) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return;
  }
  const bool met = cv_.wait_for(lock, deadline_, [&] { return generation_ != gen || aborted_; });
  if (generation_ == gen && aborted_) {
    --arrived_;
    aborted();
  }
  if (!met) {
    --arrived_;
    fail("shared-GPU collectives: rank ", rank, " waited ", deadline_.count(), " ms for the other ranks to join the ",
         call, "; a rank failed or issued another call (every rank must issue the same calls in the same order)");
  }
}

}  // namespace intellect
#endif
