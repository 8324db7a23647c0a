#!/usr/bin/env bash
# Tenth session, device call 3 (one H200), as run (one command line in the call; written out here):
# two more racecheck option probes on CudaKernels.Matmul, then racecheck over the GPU suite with each test in
# a process of its own (a sanitizer crash in one test cannot take the others with it), our kernels only.
source scripts/device/env.sh; B=devbin
for v in "--check-bulk-copy no" "--check-bulk-copy no --check-warpgroup-mma no --racecheck-memcpy-async no"; do
  timeout 90 compute-sanitizer --tool racecheck $v --kernel-name kns=intellect $B/intellect_gpu_tests \
    --gtest_filter=CudaKernels.Matmul > $OUT/rc-probe.log 2>&1
  echo "--- racecheck [$v] Matmul: exit $?"; grep -E "PASSED|FAILED|Internal|SUMMARY" $OUT/rc-probe.log | head -3
done
T0=$(date +%s)
for t in $($B/intellect_gpu_tests --gtest_list_tests \
    --gtest_filter='CudaKernels.*:CudaModel.*:CudaTraining.*:Packed/*:Precision/*:Fsdp.*:-*NvlinkMulticast*' \
    | awk '/^[^ ]/{s=$1} /^  /{print s $1}'); do
  [ $(( $(date +%s) - T0 )) -gt 420 ] && { echo "time bound reached before $t"; break; }
  timeout 120 compute-sanitizer --tool racecheck --check-bulk-copy no --kernel-name kns=intellect $B/intellect_gpu_tests \
    --gtest_filter="$t" > /tmp/rc.log 2>&1; rc=$?
  echo "$t exit=$rc $(grep -E 'RACECHECK SUMMARY' /tmp/rc.log | sed 's/=========//') $(grep -c 'Internal Sanitizer Error' /tmp/rc.log) internal-errors $(grep -oE '\[  (PASSED|FAILED|SKIPPED)  \] [0-9]+' /tmp/rc.log | head -1)" | tee -a $OUT/racecheck-per-test.log
  grep -q "Race reported\|Error: Race" /tmp/rc.log && cp /tmp/rc.log $OUT/race-$(echo $t | tr '/' '_').log
done
