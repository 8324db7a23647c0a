#!/usr/bin/env bash
# Issue 19 on a multi-GPU kind (written in the seventeenth session, no such kind lent; run it when `status`
# lists nvidia-h100-x8 / nvidia-h200-x8, or x4: the steps past the GPUs it has are skipped). ~9 min.
#   1. the topology, then the FSDP GPU tests on real GPUs: Fsdp.* over NCCL (2 GPUs and every visible GPU;
#      a rank that fails alone, injected, must stop the node within its deadline through ncclCommAbort)
#   2. the full 10B, weak scaling with train.recompute auto: 1 micro-batch of 8192 tokens per GPU, bf16
#      weights and AdamW state, on 1, 2, 4 and 8 GPUs: MFU per GPU (goal >= 60% on 2, 4, 8) and scaling
#      from 1 GPU (goal >= 95%), the memory per GPU from each run's line
# Carry devbin.tgz (scripts/device/pack.sh).
source scripts/device/env.sh
gpus=$(nvidia-smi -L | wc -l)
echo "=== topology ($(date -u +%T)): $gpus GPUs"; nvidia-smi topo -m | head -12
echo "=== FSDP tests ($(date -u +%T))"
GTEST_FILTER='Fsdp.*' timeout 200 bash scripts/device/routine.sh tests > $OUT/tests-run.log 2>&1
echo "exit $?"; grep -E "^\[  (FAILED|PASSED|  OK|SKIPPED) |Failure|note:|stopped in|ranks were released" $OUT/tests.log | head -40
for n in 1 2 4 8; do
  (( n <= gpus )) || { echo "=== 10B on $n GPUs: skipped ($gpus visible)"; continue; }
  echo "=== 10B on $n GPU(s), recompute auto ($(date -u +%T))"
  timeout 140 devbin/bench_step --config configs/10b.json --set train.gpus=$n --set train.batch_size=$n \
    --set train.micro_batch_size=1 --set precision.master_weights=false --set precision.optim_state_dtype=bf16 \
    --set train.recompute=auto --steps 5 --warmup 2 --no-kernels > $OUT/fsdp10b-$n.log 2>&1
  echo "exit $?"; grep -E "step:|ms/step|MFU|GiB|recompute|plan" $OUT/fsdp10b-$n.log | head -8
done
echo "=== end ($(date -u +%T))"
