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

unsigned long long device_memory_in_use(int device) {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t e = cudaMemGetInfo(&free_bytes, &total_bytes);
  cudaSetDevice(previous);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return total_bytes - free_bytes;
}

std::string describe_device(int device) {
  cudaDeviceProp p{};
  cudaError_t e = cudaGetDeviceProperties(&p, device);
  if (e != cudaSuccess) return str("no CUDA device ", device, ": ", cudaGetErrorString(e));
  return str(p.name, " (sm_", p.major, p.minor, ", ", p.totalGlobalMem / double(1 << 30), " GiB)");
}

}  // namespace intellect::cuda
