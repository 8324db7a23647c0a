#!/usr/bin/env bash
# Seventeenth session, call A (one H200; ~6.5 min): FP8 linear layers (issue 14), replacing the sixteenth
# session's call 3. Since then: scales 256 bytes apart, the heuristics told the operands' real alignment,
# and precision.fp8_weight_gradients (the weight gradients' GEMMs in FP8 too).
#   1. the probe: which cuBLASLt FP8 configurations run on this GPU
#   2. the FP8 tests (casts, the three products against the CPU on the cast operands, the model against
#      bf16 products and under recomputation, the tiny config's loss curves against the CPU oracle)
#   3. if the FP8 products pass: the 10B at the yardstick's setting with FP8 (forward, dX), with FP8 weight
#      gradients too, then the yardstick (torch.compile, bf16) in the same call
# Repack first: nvcc -O2 -arch=sm_90a -o /tmp/probe/fp8_probe docs/device-logs/2026-12-05-sixteenth-fp8-probe.cu
#   -lcublasLt && EXTRA_BINS="/tmp/probe/fp8_probe:fp8_probe" bash scripts/device/pack.sh; carry devbin.tgz.
source scripts/device/env.sh
echo "=== fp8 probe ($(date -u +%T))"
timeout 60 devbin/fp8_probe
echo "=== tests ($(date -u +%T))"
GTEST_FILTER='CudaKernels.Fp8*:CudaKernels.Matmul:CudaModel.Fp8*:CudaModel.LogitsAndGradientsMatchCpu:CudaModel.RecomputationGivesTheSameGradients:CudaTraining.*FollowsTheCpuLossCurve' \
  timeout 240 bash scripts/device/routine.sh tests > $OUT/tests-run.log 2>&1
echo "exit $?"; grep -E "FAILED|PASSED|Failure|error|fp8.* against|grad |tiny config|Expected|Which is|actual" $OUT/tests.log | head -80
grep -q "FAILED  \] CudaKernels.Fp8Matmul" $OUT/tests.log && { echo "FP8 products failed: no 10B run"; exit 0; }
for v in fp8 fp8dw; do
  args="--set precision.matmul=fp8"; [ $v = fp8dw ] && args="$args --set precision.fp8_weight_gradients=true"
  echo "=== bench10b $v ($(date -u +%T))"
  STEPS10B=5 BENCH_ARGS="$args" timeout 150 bash scripts/device/routine.sh bench10b > $OUT/r-$v.log 2>&1
  echo "exit $?"; cp $OUT/bench10b.log $OUT/bench10b-$v.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench10b-$v.log | tail -20
done
echo "=== yard10b ($(date -u +%T))"
STEPS10B=5 timeout 240 bash scripts/device/routine.sh yard10b > $OUT/r3.log 2>&1
echo "exit $?"; cat $OUT/yard10b.log | head -5
echo "=== end ($(date -u +%T))"
