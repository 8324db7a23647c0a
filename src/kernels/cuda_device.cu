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

bool pin_host_memory(void* p, size_t bytes, std::string* why) {
  const cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterPortable);
  if (e == cudaSuccess) return true;
  cudaGetLastError();
  if (why) *why = str("cudaHostRegister of ", bytes / double(1 << 20), " MiB failed: ", cudaGetErrorString(e));
  return false;
}

void unpin_host_memory(void* p) {
  if (cudaHostUnregister(p) != cudaSuccess) cudaGetLastError();
}

bool is_pinned_host(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeHost;
}

}  // namespace intellect::cuda
