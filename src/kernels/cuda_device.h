// CUDA runtime basics shared by the CUDA backend: device discovery and error
// checks. In a CPU-only build (INTELLECT_CUDA=OFF) device_count() is 0.
#pragma once
#include <cstddef>
#include <string>

namespace intellect::cuda {

// Usable CUDA devices; 0 when the build has no CUDA, no driver or no GPU.
int device_count();
// "NVIDIA H200 (sm_90, 139.8 GiB)" or a reason why there is none.
std::string describe_device(int device);
// The device's memory in use (total - free, every process's), in bytes; 0
// when it cannot be read. For the run's status page.
unsigned long long device_memory_in_use(int device);

// Page-locks [p, p + bytes) of ordinary host memory (cudaHostRegister), so
// that copies between it and any GPU run as DMA at the bus's rate instead of
// through pinned staging and a host memcpy. False, with the reason in *why,
// when that cannot be done (no CUDA in this build, RLIMIT_MEMLOCK, memory):
// callers then keep using staging. unpin_host_memory undoes it; call it
// before the memory is freed.
bool pin_host_memory(void* p, size_t bytes, std::string* why);
void unpin_host_memory(void* p);
// Whether p lies in page-locked host memory (registered or cudaMallocHost).
bool is_pinned_host(const void* p);

}  // namespace intellect::cuda
