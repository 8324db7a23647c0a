#!/usr/bin/env bash
# Written in the eighteenth session for the next one (one H200; ~6 min; carry devbin.tgz): issue 14's last
# check. The FP8 kernels (absmax, the casts plain and transposed) came after the last sanitizer run (fifteenth
# session), so: the whole GPU suite, then compute-sanitizer memcheck and initcheck over the default filter
# (the FP8 tests are in it: CudaKernels.Fp8*, CudaModel.Fp8*, CudaTraining.Fp8*), and racecheck over the FP8
# cast test (the one FP8 test without a cuBLAS GEMM, which racecheck cannot run: RELIABILITY.md).
source scripts/device/env.sh
echo "=== GPU tests ($(date -u +%T))"
timeout 240 bash scripts/device/routine.sh tests > $OUT/routine-tests.log 2>&1; echo "exit $?"
grep -E "^\[  (PASSED|FAILED)|tests ran|FAILED  \]|SKIPPED \]" $OUT/tests.log | tail -12
echo "=== memcheck, initcheck ($(date -u +%T))"
SAN_TOOLS="memcheck initcheck" SAN_TIMEOUT=110 timeout 240 bash scripts/device/routine.sh sanitize > $OUT/sanitize.log 2>&1
echo "exit $?"; grep -E "=== |exit|ERROR SUMMARY|PASSED|FAILED" $OUT/sanitize.log | tail -12
echo "=== racecheck, the FP8 casts ($(date -u +%T))"
SAN_TOOLS=racecheck SAN_FILTER='CudaKernels.Fp8Casts*' SAN_TIMEOUT=100 timeout 150 \
  bash scripts/device/routine.sh sanitize > $OUT/racecheck.log 2>&1
echo "exit $?"; grep -E "exit=|RACECHECK" $OUT/racecheck.log | tail -8
echo "=== end ($(date -u +%T))"
