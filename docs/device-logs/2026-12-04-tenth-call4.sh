#!/usr/bin/env bash
# Tenth session, device call 4 (one H200), as run: issue 14's cross-entropy kernel (its test, and bench_step's
# kernel table on the 4-layer slice: the cross-entropy row against its floor, old figure 0.418 ms, 61.1%);
# issue 16's sealed/plaintext ratio of the int8 ring at 4 nodes and 8 rings, rounds 4x longer than the eighth
# session's (134M values, about 0.4 s), secret and node keys, plaintext and sealed alternating, 3 repeats.
source scripts/device/env.sh
B=devbin
echo "=== cross-entropy test ($(date -u +%T))"
$B/intellect_gpu_tests --gtest_filter='CudaKernels.CrossEntropy*:CudaModel.LogitsAndGradientsMatchCpu:CudaTraining.*' 2>&1 \
  | grep -E "^\[  (PASSED|FAILED)|FAILED  \]|OK \]"
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
        --set precision.master_weights=false --set precision.optim_state_dtype=bf16)
echo "=== bench4 with the kernel table ($(date -u +%T))"
timeout 150 $B/bench_step "${common[@]}" --set model.n_layers=4 --set train.recompute=auto --steps 10 --warmup 3 \
  > $OUT/bench4-kernels.log 2>&1; echo "exit $?"
grep -E "cross-entropy|ms/step|swiglu|rmsnorm|embedding" $OUT/bench4-kernels.log
echo "=== issue 16: sealed / plaintext, 4 nodes, 8 rings, 134M values ($(date -u +%T))"
lscpu | grep "Model name"
for rep in 1 2 3; do for auth in secret keys; do for p in --plaintext ""; do
  echo "--- auth $auth, ${p:-sealed (openssl)}, repeat $rep"
  timeout 90 $B/bench_allreduce --nodes 4 --rings 8 --compression int8 --elems 134217728 --rounds 4 --auth $auth $p \
    2>&1 | grep -E "round [234]:"
done; done; done 2>&1 | tee $OUT/ring-crypto.log
echo "=== end ($(date -u +%T))"
