// The host-side view of CUDA types for kernel declarations. Headers include
// this only inside #ifdef INTELLECT_HAVE_CUDA, so CPU-only builds need no CUDA.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace intellect::cuda {
using bf16 = __nv_bfloat16;
}
