#!/usr/bin/env bash
# Nineteenth session, call 4 (one H200: the 10B does not fit an H100 at one GPU; ~6 min; carry devbin.tgz):
# the full 10B with the FP8 classifier against PyTorch's fastest FP8 (torch.compile + torchao float8, its
# classifier in FP8), in the same call, and ours without the FP8 classifier (733.31 ms in the eighteenth).
source scripts/device/env.sh
echo "=== yardstick 10B, torch.compile + torchao float8, FP8 classifier ($(date -u +%T))"
LAYERS=42 FP8_HEAD=1 STEPS10B=5 timeout 330 bash scripts/device/routine.sh yard-fp8 > $OUT/yard10b-run.log 2>&1
echo "exit $?"; tail -4 $OUT/yard-fp8.log
for v in ${VARIANTS:-fp8head fp8dw}; do
  args="--set precision.matmul=fp8 --set precision.fp8_weight_gradients=true"
  [ $v = fp8head ] && args="$args --set precision.fp8_classifier=true"
  echo "=== bench10b $v ($(date -u +%T))"
  STEPS10B=5 BENCH_ARGS="$args" timeout 120 bash scripts/device/routine.sh bench10b > $OUT/r-$v.log 2>&1
  echo "exit $?"; cp $OUT/bench10b.log $OUT/bench10b-$v.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench10b-$v.log | tail -5
done
echo "=== end ($(date -u +%T))"
