#!/usr/bin/env bash
# Tenth session, device call 2 (one H200), as run: FSDP's collectives behind RankCollectives, with the
# shared-GPU test double (INTELLECT_FSDP_SHARED_GPU) so the Fsdp.* tests run their ranks on the one GPU; the
# whole GPU suite; and a probe of why racecheck's run over the suite crashed in cuBLAS (call 1).
source scripts/device/env.sh
B=devbin
echo "=== GPU tests ($(date -u +%T))"
timeout 300 $B/intellect_gpu_tests > $OUT/tests.log 2>&1; echo "exit $?"
grep -E "^\[  (PASSED|FAILED|SKIPPED)|tests ran|FAILED  \]|^note:" $OUT/tests.log | tail -14
grep -E "^\[ +(OK|FAILED) +\] Fsdp" $OUT/tests.log
echo "=== racecheck options ($(date -u +%T))"
compute-sanitizer --help 2>&1 | grep -E "^ *--(racecheck|check-warpgroup|check-bulk|track)" | head -12
for v in "" "--check-warpgroup-mma no" "--racecheck-memcpy-async no" "--check-warpgroup-mma no --racecheck-memcpy-async no"; do
  timeout 90 compute-sanitizer --tool racecheck $v --kernel-name kns=intellect $B/intellect_gpu_tests \
    --gtest_filter=CudaKernels.Matmul > $OUT/rc-probe.log 2>&1
  echo "--- racecheck [$v] on CudaKernels.Matmul: exit $?"
  grep -E "PASSED|FAILED|Internal|SUMMARY|nrecogn|Invalid|rror:" $OUT/rc-probe.log | head -4
done
echo "=== end ($(date -u +%T))"
