// CUDA runtime basics shared by the CUDA backend: device discovery and error
// checks. In a CPU-only build (INTELLECT_CUDA=OFF) device_count() is 0.
#pragma once
#include <string>

namespace intellect::cuda {

// Usable CUDA devices; 0 when the build has no CUDA, no driver or no GPU.
int device_count();
// "NVIDIA H200 (sm_90, 139.8 GiB)" or a reason why there is none.
std::string describe_device(int device);

}  // namespace intellect::cuda
