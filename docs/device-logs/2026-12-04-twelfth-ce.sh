#!/usr/bin/env bash
# Twelfth session, the cross-entropy calls (one H200), branch issue14-ce-floor: the cluster cross-entropy
# kernel (the row held in registers across a thread-block cluster, read from DRAM once) against the rowwise
# kernel it replaces. Pack first, here: `bash scripts/device/pack.sh` (carry devbin.tgz). Sections, as
# arguments (default: tests bench, about 5 minutes; sanitize ncu in a second call):
#   tests     the cross-entropy GPU tests (the cluster kernel at V = 2048 ... 262144, the rowwise fallback,
#             misaligned pointers, ignored rows, ties), then the other kernel, model and training tests,
#             which reach the loss through the launcher
#   bench     the 4-layer bench_step step time and kernel table: both cross-entropy lines (the launcher's
#             pick, then the rowwise kernel, on the same 2093 x 128256 chunk), against tenth call 6's
#             129.18 ms/step and 0.447 ms (0.418 ms in PERFORMANCE.md)
#   sanitize  compute-sanitizer memcheck and racecheck over the cross-entropy tests, our kernels only
#   ncu       if ncu is there and allowed: DRAM bytes and time of each kernel on the chunk; one read and one
#             write is 2 x 537 MB at 2093 x 128256, the rowwise kernel should show about 1.07 GB read
source scripts/device/env.sh
B=devbin
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
        --set precision.master_weights=false --set precision.optim_state_dtype=bf16
        --set model.n_layers=4 --set train.recompute=auto)
for part in ${@:-tests bench}; do
  case $part in
    tests)
      echo "=== cross-entropy tests ($(date -u +%T))"
      timeout 90 $B/intellect_gpu_tests --gtest_filter='CudaKernels.CrossEntropy*' > $OUT/ce-tests.log 2>&1
      echo "exit $?"
      grep -E "^\[ +(OK|FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|rror|trace" $OUT/ce-tests.log | head -40
      echo "=== other kernel, model and training tests ($(date -u +%T))"
      timeout 180 $B/intellect_gpu_tests \
        --gtest_filter='CudaKernels.*:CudaModel.*:CudaTraining.*:Packed/*:Precision/*:-*Fsdp*:CudaKernels.CrossEntropy*' \
        > $OUT/tests.log 2>&1; echo "exit $?"
      grep -E "^\[  (PASSED|FAILED)|tests ran|FAILED  \]" $OUT/tests.log | tail -8 ;;
    bench)
      echo "=== bench4 with the kernel table ($(date -u +%T))"
      timeout 200 $B/bench_step "${common[@]}" --steps 5 --warmup 2 > $OUT/bench4-kernels.log 2>&1; echo "exit $?"
      grep -E "ms/step|phases|per-kernel|cross-entropy|lm_head|Error|error" $OUT/bench4-kernels.log ;;
    sanitize)
      for tool in memcheck racecheck; do
        echo "=== sanitize $tool, cross-entropy tests ($(date -u +%T))"
        timeout 200 compute-sanitizer --tool $tool --print-limit 20 --kernel-name kns=intellect \
          $B/intellect_gpu_tests --gtest_filter='CudaKernels.CrossEntropy*' > $OUT/ce-sanitize-$tool.log 2>&1
        echo "exit $?"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED|rror: " $OUT/ce-sanitize-$tool.log | tail -6
      done ;;
    ncu)
      command -v ncu > /dev/null || { echo "(no ncu on this machine: DRAM bytes not measured)"; continue; }
      # The cluster kernel runs in the training step (--no-kernels skips the table); the rowwise one only in
      # the table. Two launches of each.
      for k in cross_entropy_cluster_kernel cross_entropy_kernel; do
        echo "=== ncu: $k ($(date -u +%T))"
        extra=(); [ $k = cross_entropy_cluster_kernel ] && extra=(--no-kernels)
        timeout 240 ncu -k "regex:^$k" -c 2 --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__grid_size \
          $B/bench_step "${common[@]}" --steps 1 --warmup 0 "${extra[@]}" > $OUT/ncu-$k.log 2>&1; echo "exit $?"
        grep -E "cross_entropy|duration|bytes_read|bytes_write|hit_rate|warps_active|registers|grid_size|ERR|rror" \
          $OUT/ncu-$k.log | head -24
      done ;;
    *) echo "unknown section $part (tests, bench, sanitize, ncu)" ;;
  esac
done
echo "=== end ($(date -u +%T))"
