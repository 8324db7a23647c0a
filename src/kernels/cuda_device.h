// CUDA runtime basics shared by the CUDA backend: device discovery and error
// checks. In a CPU-only build (INTELLECT_CUDA=OFF) device_count() is 0.
#pragma once
#include <string>

namespace intellect::cuda {

// Usable CUDA devices; 0 when the build has no CUDA, no driver or no GPU.
int device_count();
// "NVIDIA H200 (sm_90, 139.8 GiB)" or a reason why there is none.
std::string describe_device(int device);
// The device's memory in use (total - free, every process's), in bytes; 0
// when it cannot be read. For the run's status page.
unsigned long long device_memory_in_use(int device);

}  // namespace intellect::cuda
