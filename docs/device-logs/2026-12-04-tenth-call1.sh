#!/usr/bin/env bash
# Tenth session, device call 1 (one H200), as run. Binaries: main with LlamaCuda's units behind UnitWeights
# (ResidentWeights + DeferredUpdate on one GPU, FsdpWeights under FSDP). The GPU tests, compute-sanitizer's
# three tools over the GPU suite with only our kernels instrumented (kernel names containing "intellect":
# cuBLAS's and cuDNN's kernels run uninstrumented, which is what let racecheck finish the suite), and the
# 4-layer and full-10B steps (bench_step alone, for a before/after against earlier calls).
source scripts/device/env.sh
B=devbin
echo "=== tests ($(date -u +%T))"
timeout 200 $B/intellect_gpu_tests > $OUT/tests.log 2>&1; echo "exit $?"
grep -E "^\[  (PASSED|FAILED)|tests ran|FAILED  \]" $OUT/tests.log | tail -8
compute-sanitizer --version | tail -1
compute-sanitizer --help 2>&1 | grep -A3 -E "^ *--kernel-name" | head -10
for tool in memcheck initcheck racecheck; do
  t=150; [ $tool = racecheck ] && t=330
  echo "=== sanitize $tool, at most $t s ($(date -u +%T))"
  san() { timeout $t compute-sanitizer --tool $tool --print-limit 20 "$@" \
    $B/intellect_gpu_tests --gtest_filter='CudaKernels.*:CudaModel.*:CudaTraining.*:Packed/*:Precision/*:-*Fsdp*' \
    > $OUT/sanitize-$tool.log 2>&1; echo "exit $?"; }
  san --kernel-name kns=intellect
  if ! grep -q "RUN" $OUT/sanitize-$tool.log; then  # the filter option refused: the whole suite, unfiltered
    head -3 $OUT/sanitize-$tool.log; echo "(retrying without the kernel filter)"; san
  fi
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|tests ran|PASSED|FAILED|nrecogni|rror: " $OUT/sanitize-$tool.log | tail -6
  echo "tests finished: $(grep -c '^\[       OK' $OUT/sanitize-$tool.log)"
done
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
        --set precision.master_weights=false --set precision.optim_state_dtype=bf16)
echo "=== bench4 ($(date -u +%T))"
timeout 100 $B/bench_step "${common[@]}" --set model.n_layers=4 --set train.recompute=auto --steps 10 --warmup 3 \
  --no-kernels 2>&1 | tee $OUT/bench4.log | grep -E "ms/step|MFU|tokens/s" | head -4
echo "=== bench10b ($(date -u +%T))"
timeout 150 $B/bench_step "${common[@]}" --steps 5 --warmup 2 --no-kernels 2>&1 | tee $OUT/bench10b.log \
  | grep -E "ms/step|MFU|tokens/s|GiB" | head -6
echo "=== end ($(date -u +%T))"
