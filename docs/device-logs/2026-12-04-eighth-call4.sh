#!/usr/bin/env bash
# Eighth session, device call 4 (one H200), as run: the whole join again with the donors' round pin and a joiner
# one round behind waited for once (main at 39f7b9e), 400 steps to fit the device time left.
source scripts/device/env.sh
STEPS=400 RUN_DEADLINE_S=150 timeout 200 bash scripts/device/routine.sh join-wan > $OUT/join-wan-all.log 2>&1
grep -E "join_wan|joined at|caught up|utilization|late" $OUT/join-wan-all.log | tail -14
grep -vh "asks for another donor" /tmp/join-wan-1000/coordinator.log > $OUT/jw-coordinator.log 2>/dev/null
grep -h "^outer step" /tmp/join-wan-1000/joiner/train.log | head -12
