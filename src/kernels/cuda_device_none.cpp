// The CPU-only build's answer to device discovery.
#ifndef INTELLECT_HAVE_CUDA
#include "kernels/cuda_device.h"

namespace intellect::cuda {
int device_count() { return 0; }
std::string describe_device(int) { return "this build has no CUDA backend (INTELLECT_CUDA=OFF)"; }
unsigned long long device_memory_in_use(int) { return 0; }
bool pin_host_memory(void*, size_t, std::string* why) {
  if (why) *why = "this build has no CUDA backend";
  return false;
}
void unpin_host_memory(void*) {}
bool is_pinned_host(const void*) { return false; }
}  // namespace intellect::cuda
#endif
