#!/usr/bin/env bash
# NOT RUN in the thirteenth session (the device was paused after call 2): the ratio to torch.compile on the
# full 10B and the 4-layer slice with the cluster cross-entropy kernel as the default (issue 14), both
# sides in the same call, as PERFORMANCE.md's table. About 8 minutes: bench_step with the rowwise kernel
# (--ce-rowwise) and without, alternating, then the yardstick.
source scripts/device/env.sh
STEPS10B=5 BENCH_ARGS=--ce-rowwise timeout 150 bash scripts/device/routine.sh bench10b > $OUT/r1.log 2>&1
grep -E "ms/step|MFU|median" $OUT/bench10b.log | head -3; cp $OUT/bench10b.log $OUT/bench10b-rowwise.log
STEPS10B=5 timeout 150 bash scripts/device/routine.sh bench10b > $OUT/r2.log 2>&1
grep -E "ms/step|MFU|median" $OUT/bench10b.log | head -3
STEPS10B=5 timeout 240 bash scripts/device/routine.sh yard10b > $OUT/r3.log 2>&1
cat $OUT/yard10b.log
echo "=== end ($(date -u +%T))"
