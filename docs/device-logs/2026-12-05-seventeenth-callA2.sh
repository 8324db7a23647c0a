#!/usr/bin/env bash
# Seventeenth session, call A2 (one H200), as run at 09:54 UTC: call A's 10B half, run without its test gate
# (call A's FP8 tests failed only on bounds its own measurements then reset; the products ran).
source scripts/device/env.sh
for v in fp8 fp8dw; do
  args="--set precision.matmul=fp8"; [ $v = fp8dw ] && args="$args --set precision.fp8_weight_gradients=true"
  echo "=== bench10b $v ($(date -u +%T))"
  STEPS10B=5 BENCH_ARGS="$args" timeout 150 bash scripts/device/routine.sh bench10b > $OUT/r-$v.log 2>&1
  echo "exit $?"; cp $OUT/bench10b.log $OUT/bench10b-$v.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench10b-$v.log | tail -14
done
echo "=== yard10b ($(date -u +%T))"; STEPS10B=5 timeout 240 bash scripts/device/routine.sh yard10b > $OUT/r3.log 2>&1
echo "exit $?"; head -5 $OUT/yard10b.log; echo "=== end ($(date -u +%T))"
