#!/usr/bin/env bash
# Tenth session, device call 5 (one H200), as run: issue 15's whole join where the ring is a small share of the
# link: 150m, 1 Gbit/s and 50 ms on every link, 2 nodes + a joiner at outer step 2, H = 100 inner steps of
# 64 x 1024 tokens (4 micro-batches of 16), so a round comes every ~20 s and its 277 MB take ~3 s of the link
# (about 15%, where the eighth session's H = 20 x 16k tokens made it ~44%).
source scripts/device/env.sh
BATCH=64 MICRO=16 H=100 STEPS=700 JOIN_AT=2 RUN_DEADLINE_S=420 timeout 520 bash scripts/device/routine.sh join-wan \
  > $OUT/join-wan-all.log 2>&1
echo "exit $?"
grep -E "join_wan|joined at|joiner:|link |donor|utilization|late" $OUT/join-wan-all.log | tail -14
grep -h '"joined"' /tmp/join-wan-1000/joiner/metrics.jsonl | head -1 | cut -c1-500
grep -vh "asks for another donor" /tmp/join-wan-1000/coordinator.log > $OUT/jw-coordinator.log 2>/dev/null
grep -h "outer step" /tmp/join-wan-1000/joiner/train.log | head -8
echo "=== end ($(date -u +%T))"
