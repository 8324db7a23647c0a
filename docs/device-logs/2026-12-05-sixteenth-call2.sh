#!/usr/bin/env bash
# Sixteenth session, call 2 (one H200): FP8 linear layers (precision.matmul "fp8", issue 14).
#   1. the GPU tests of the new path: the casts against the CPU twin, the FP8 products against fp32 products
#      of the cast operands, the model against bf16 products (and under recomputation), the tiny config's
#      loss curve against the CPU oracle; and the bf16 products' tests beside them
#   2. the full 10B at the yardstick's setting with FP8 linear layers, then the yardstick (torch.compile,
#      bf16) in the same call
source scripts/device/env.sh
echo "=== tests ($(date -u +%T))"
GTEST_FILTER='CudaKernels.Fp8*:CudaKernels.Matmul:CudaModel.Fp8*:CudaModel.LogitsAndGradientsMatchCpu:CudaModel.RecomputationGivesTheSameGradients:CudaTraining.FollowsTheCpuLossCurve' \
  timeout 200 bash scripts/device/routine.sh tests > $OUT/tests-run.log 2>&1
echo "exit $?"; grep -v "^\[ *RUN\|^\[ *OK" $OUT/tests.log | tail -45
echo "=== bench10b fp8 ($(date -u +%T))"
STEPS10B=5 BENCH_ARGS="--set precision.matmul=fp8" timeout 170 bash scripts/device/routine.sh bench10b > $OUT/r1.log 2>&1
echo "exit $?"; cp $OUT/bench10b.log $OUT/bench10b-fp8.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench10b-fp8.log | tail -25
echo "=== yard10b ($(date -u +%T))"
STEPS10B=5 timeout 240 bash scripts/device/routine.sh yard10b > $OUT/r3.log 2>&1
echo "exit $?"; cat $OUT/yard10b.log | head -5
echo "=== end ($(date -u +%T))"
