#!/usr/bin/env bash
# Thirteenth session, call 1 (one H200), build 26f5792: the twelfth session's unmeasured changes.
#   1. the whole outer step on loopback after the kept round is written in place (PlannedRound) and the norm
#      is summed in the commitment's pass: 4 and 2 nodes, int8, 277M values (issue 15's goal: >= 2 GB/s)
#   2. the 4-layer bench_step with the rowwise cross-entropy kernel and with the cluster one (--ce-cluster)
#   3. the kernel table, line-buffered and time-stamped (call 1 of the twelfth printed nothing in 200 s)
#   4. compute-sanitizer memcheck over the cross-entropy tests (the cluster kernel included)
source scripts/device/env.sh
echo "=== host ($(date -u +%T)): $(nproc) cores; perf: $(command -v perf || echo none)"
for cfg in "4 1" "2 1"; do
  set -- $cfg
  echo "=== ring: $1 nodes, $2 ring(s), 277M values, int8 ($(date -u +%T))"
  timeout 150 devbin/bench_allreduce --nodes $1 --elems 277000000 --rounds 3 --compression int8 --rings $2 2>&1 | tail -9
done
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
        --set precision.master_weights=false --set precision.optim_state_dtype=bf16
        --set model.n_layers=4 --set train.recompute=auto)
echo "=== bench4, no kernel table ($(date -u +%T))"
timeout 100 devbin/bench_step "${common[@]}" --steps 10 --warmup 3 --no-kernels > $OUT/bench4.log 2>&1; echo "exit $?"
grep -E "ms/step|MFU|tokens/s" $OUT/bench4.log | head -4
echo "=== bench4, no kernel table, --ce-cluster ($(date -u +%T))"
timeout 100 devbin/bench_step "${common[@]}" --steps 10 --warmup 3 --no-kernels --ce-cluster > $OUT/bench4-ce-cluster.log 2>&1
echo "exit $?"; grep -E "ms/step|MFU|tokens/s" $OUT/bench4-ce-cluster.log | head -4
echo "=== bench4, kernel table, line-buffered ($(date -u +%T))"
timeout 200 stdbuf -oL -eL devbin/bench_step "${common[@]}" --steps 3 --warmup 1 2>&1 \
  | while IFS= read -r l; do echo "$(date -u +%T) $l"; done > $OUT/bench4-kernels.log; echo "exit ${PIPESTATUS[0]}"
grep -E "ms/step|cross-entropy|lm_head" $OUT/bench4-kernels.log | head; tail -4 $OUT/bench4-kernels.log
echo "=== memcheck, cross-entropy tests ($(date -u +%T))"
timeout 100 compute-sanitizer --tool memcheck --print-limit 20 --kernel-name kns=intellect \
  devbin/intellect_gpu_tests --gtest_filter='CudaKernels.CrossEntropy*' > $OUT/ce-memcheck.log 2>&1; echo "exit $?"
grep -E "ERROR SUMMARY|PASSED|FAILED" $OUT/ce-memcheck.log | head
echo "=== end ($(date -u +%T))"
