// Helpers for the GPU kernel tests: device buffers, bf16 conversion, and the
// skip that keeps CPU-only machines green.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cuda_device.h"
#include "test_util.h"

#define REQUIRE_GPU()                                                                   \
  do {                                                                                  \
    if (::intellect::cuda::device_count() == 0)                                         \
      GTEST_SKIP() << "no CUDA GPU on this machine (" << ::intellect::cuda::describe_device(0) \
                   << "); GPU tests run on the device machine";                         \
  } while (0)

namespace intellect::test {

using bf16 = __nv_bfloat16;

template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n == 0) return;
    EXPECT_EQ(cudaMalloc(&p_, n * sizeof(T)), cudaSuccess);
    // Poison: NaN for floating types (0xFF bytes), so unwritten outputs fail.
    cudaMemset(p_, 0xFF, n * sizeof(T));
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& v) {
    EXPECT_EQ(v.size(), n_);
    cudaMemcpy(p_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice);
  }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __float2bfloat16(v[i]);
  return o;
}
inline std::vector<float> to_f32(const std::vector<bf16>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __bfloat162float(v[i]);
  return o;
}
// Rounds through bf16, so the CPU reference sees exactly the GPU's inputs.
inline std::vector<float> round_bf16(std::vector<float> v) {
  for (auto& x : v) x = __bfloat162float(__float2bfloat16(x));
  return v;
}
inline std::vector<float> randn_bf16(size_t n, uint64_t seed, float scale = 1.0f) {
  return round_bf16(randn(n, seed, scale));
}

// bf16 outputs carry ~2^-8 relative rounding; fp32 accumulation adds little.
constexpr double kBf16Tol = 2e-2;

}  // namespace intellect::test
