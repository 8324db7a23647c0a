#include <cuda_runtime.h>

#include "kernels/cuda_device.h"
#include "util/error.h"

namespace intellect::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string describe_device(int device) {
  cudaDeviceProp p{};
  cudaError_t e = cudaGetDeviceProperties(&p, device);
  if (e != cudaSuccess) return str("no CUDA device ", device, ": ", cudaGetErrorString(e));
  return str(p.name, " (sm_", p.major, p.minor, ", ", p.totalGlobalMem / double(1 << 30), " GiB)");
}

}  // namespace intellect::cuda
