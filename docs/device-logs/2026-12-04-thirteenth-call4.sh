#!/usr/bin/env bash
# Thirteenth session, call 4 (one H200): the GPU suite on the build with the cluster cross-entropy kernel as
# the launcher's default (every model and training test now reaches the loss through it), then
# compute-sanitizer memcheck and initcheck over the suite (our kernels), and racecheck over the
# cross-entropy tests (the only kernel changed; racecheck cannot run the tests that call cuBLAS, RELIABILITY.md).
source scripts/device/env.sh
echo "=== GPU tests ($(date -u +%T))"
timeout 240 bash scripts/device/routine.sh tests > $OUT/routine-tests.log 2>&1; echo "exit $?"
grep -E "^\[  (PASSED|FAILED)|tests ran|FAILED  \]|SKIPPED \]" $OUT/tests.log | tail -12
echo "=== memcheck, initcheck ($(date -u +%T))"
SAN_TOOLS="memcheck initcheck" SAN_TIMEOUT=110 timeout 240 bash scripts/device/routine.sh sanitize > $OUT/sanitize.log 2>&1
echo "exit $?"; grep -E "=== |exit|ERROR SUMMARY|PASSED|FAILED" $OUT/sanitize.log | tail -12
echo "=== racecheck, cross-entropy tests ($(date -u +%T))"
SAN_TOOLS=racecheck SAN_FILTER='CudaKernels.CrossEntropy*' SAN_TIMEOUT=100 timeout 150 \
  bash scripts/device/routine.sh sanitize > $OUT/racecheck.log 2>&1
echo "exit $?"; grep -E "exit=|RACECHECK" $OUT/racecheck.log | tail -8
echo "=== end ($(date -u +%T))"
