// The classifier loss: softmax cross-entropy with INTELLECT-1's max-z-loss
// (z_weight · max(logits)², from Baichuan 2), forward and backward in one pass.
//
// Targets < 0 are ignored. Losses are returned as sums over the rows with a
// valid target; the caller divides by the number of targets in the step and
// passes the same divisor as grad_scale = 1/n, so dlogits is the gradient of
//   mean_ce + z_weight · mean(max_logit²).
#pragma once
#include <cstdint>

namespace intellect::cpu {

struct LossSums {
  double ce = 0.0;      // Σ −log softmax(logits)[target]
  double z = 0.0;       // Σ max(logits)²
  int64_t n_valid = 0;  // rows with a target
};

// dlogits may be null (forward only) or alias logits (overwritten in place).
LossSums cross_entropy(const float* logits, float* dlogits, const int32_t* targets, int64_t N,
                       int64_t V, float z_weight, float grad_scale);

}  // namespace intellect::cpu

#ifdef INTELLECT_HAVE_CUDA
#include "kernels/cuda_types.h"
namespace intellect::cuda {
// One pass per row over bf16 logits [N, V]: the row's loss terms go to
// row_ce/row_z (0 for ignored rows) and the logits are overwritten by
// dlogits = grad_scale · ∂(ce + z_weight·max²)/∂logits, so no probabilities
// are ever stored. logits_f32 (nullable) receives a float copy first.
void cross_entropy_forward_backward(bf16* logits, float* row_ce, float* row_z,
                                    float* logits_f32, const int32_t* targets, int64_t N,
                                    int64_t V, float z_weight, float grad_scale,
                                    cudaStream_t stream);
// The kernel cross_entropy_forward_backward runs for these arguments:
// kCluster (one thread-block cluster per row, the row held in registers, read
// from DRAM once) where V is a multiple of 8 up to kClusterMaxVocab and the
// pointers are 16-byte aligned; kRowwise (one block per row, the row read
// twice) otherwise. Tests and bench_step ask, so each path is known to be run.
// The cluster kernel is the default since it was timed at the model's shapes
// (thirteenth session, call 1: 0.368 ms against the rowwise kernel's 0.418 ms
// on a 2092 x 128256 chunk, memcheck clean); allow_cluster_cross_entropy(false)
// keeps the rowwise kernel (bench_step --ce-rowwise times the step on it).
enum class CrossEntropyKernel { kCluster, kRowwise };
constexpr int64_t kClusterMaxVocab = 8 * 512 * 8 * 8;  // 8 blocks × 512 threads × 8 vectors × 8 logits
void allow_cluster_cross_entropy(bool allowed);
bool cluster_cross_entropy_allowed();
CrossEntropyKernel cross_entropy_kernel_for(int64_t N, int64_t V, const bf16* logits, const float* logits_f32);
// The one-block-per-row kernel alone (the fallback), with the same contract:
// for tests and bench_step's before/after.
void cross_entropy_forward_backward_rowwise(bf16* logits, float* row_ce, float* row_z,
                                            float* logits_f32, const int32_t* targets, int64_t N,
                                            int64_t V, float z_weight, float grad_scale,
                                            cudaStream_t stream);
// sums[0] += Σ row_ce, sums[1] += Σ row_z, sums[2] += valid rows: one block,
// fixed order, so the step's loss is deterministic.
void accumulate_loss(double* sums, const float* row_ce, const float* row_z, const int32_t* targets,
                     int64_t N, cudaStream_t stream);
}  // namespace intellect::cuda
#endif
