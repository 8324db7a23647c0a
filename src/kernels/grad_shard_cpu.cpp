#include "kernels/grad_shard.h"

namespace intellect::cpu {

void add_into(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace intellect::cpu
