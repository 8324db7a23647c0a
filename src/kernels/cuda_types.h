// The host-side view of CUDA types for kernel declarations. Headers include
// this only inside #ifdef INTELLECT_HAVE_CUDA, so CPU-only builds need no CUDA.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace intellect::cuda {
using bf16 = __nv_bfloat16;

// Where a weight gradient goes. The flat gradient buffer is fp32 or bf16
// (precision.grad_dtype); `accumulate` adds to what is there (every
// micro-batch after the first), otherwise the kernel overwrites, so the first
// micro-batch of a step needs no zeroing pass over the buffer.
struct GradOut {
  void* p = nullptr;
  bool bf16 = false;
  bool accumulate = true;
  template <class T>
  T* as() const { return static_cast<T*>(p); }
};
}
