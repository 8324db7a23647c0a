#!/usr/bin/env bash
# Sixteenth session, call 3 (one H200): call 2 again after its FP8 products were refused by cuBLASLt
# (CUBLAS_STATUS_NOT_SUPPORTED at the first FP8 matmul): scales now 16 bytes apart, and the first of the
# heuristics' candidates that runs is kept. The 10B runs only when the FP8 product test passes.
source scripts/device/env.sh
echo "=== fp8 probe ($(date -u +%T)): which cuBLASLt FP8 configurations run (source: 2026-12-05-sixteenth-fp8-probe.cu)"
timeout 60 devbin/fp8_probe
echo "=== tests ($(date -u +%T))"
GTEST_FILTER='CudaKernels.Fp8*:CudaKernels.Matmul:CudaModel.Fp8*:CudaModel.LogitsAndGradientsMatchCpu:CudaModel.RecomputationGivesTheSameGradients:CudaTraining.FollowsTheCpuLossCurve' \
  timeout 200 bash scripts/device/routine.sh tests > $OUT/tests-run.log 2>&1
echo "exit $?"; grep -E "FAILED|PASSED|Failure|error|fp8 against|grad |tiny config|Expected|Which is|actual" $OUT/tests.log | head -60
grep -q "FAILED  \] CudaKernels.Fp8Matmul" $OUT/tests.log && { echo "FP8 products failed: no 10B run"; exit 0; }
echo "=== bench10b fp8 ($(date -u +%T))"
STEPS10B=5 BENCH_ARGS="--set precision.matmul=fp8" timeout 170 bash scripts/device/routine.sh bench10b > $OUT/r1.log 2>&1
echo "exit $?"; cp $OUT/bench10b.log $OUT/bench10b-fp8.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench10b-fp8.log | tail -25
echo "=== yard10b ($(date -u +%T))"
STEPS10B=5 timeout 240 bash scripts/device/routine.sh yard10b > $OUT/r3.log 2>&1
echo "exit $?"; cat $OUT/yard10b.log | head -5
echo "=== end ($(date -u +%T))"
