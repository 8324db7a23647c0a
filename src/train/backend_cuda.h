// The CUDA backends behind make_backend(): one GPU (CudaBackend), or a node's
// GPUs sharded FSDP-style over NCCL (FsdpBackend). Internal to src/train.
#pragma once
#ifdef INTELLECT_HAVE_CUDA
#include <memory>

#include "model/llama_cuda.h"
#include "train/backend.h"

namespace intellect {

// The model options a config asks for (one GPU; FSDP adds rank and world).
CudaOptions cuda_options(const Config& cfg);
// precision.grad_dtype resolved ("auto": bf16 when one GPU takes a step in one micro-batch).
bool use_bf16_grads(const Config& cfg);
// train.gpus resolved: 0 means every visible GPU; more than are visible fails.
int resolve_gpu_count(const Config& cfg);

std::unique_ptr<Backend> make_cuda_backend(const Config& cfg, int64_t max_batch, int64_t seq_len);
std::unique_ptr<Backend> make_fsdp_backend(const Config& cfg, int gpus, int64_t max_batch, int64_t seq_len);
// INTELLECT_FSDP_SHARED_GPU=1: every FSDP rank on GPU 0 with in-process
// collectives (dist/shared_gpu_group.h), to test FSDP where one GPU is lent.
bool fsdp_on_shared_gpu();

}  // namespace intellect
#endif
