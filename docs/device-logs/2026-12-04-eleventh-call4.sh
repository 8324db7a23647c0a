#!/usr/bin/env bash
# Eleventh session, device call 4 (one H200): call 2 again (the whole join with the snapshot's shared prefix
# striped over further donors, the joiner's downlink emulated, the donor's snapshot encoded unzeroed, the
# joiner's parse beside the round's download: 1.20x there), now with pieces of a quarter the size (16 a lane
# instead of 4), for the download's tail. The same setting: 150m, 1 Gbit/s and 50 ms on every link, 2 nodes +
# a joiner at outer step 2, H = 100 inner steps of 64 x 1024 tokens.
source scripts/device/env.sh
BATCH=64 MICRO=16 H=100 STEPS=500 JOIN_AT=2 RUN_DEADLINE_S=380 timeout 440 bash scripts/device/routine.sh join-wan \
  > $OUT/join-wan-all.log 2>&1
echo "exit $?"
grep -E "join_wan|joined at|joiner:|link |donor|utilization|late" $OUT/join-wan-all.log | tail -14
grep -h '"joined"' /tmp/join-wan-1000/joiner/metrics.jsonl | head -1 | cut -c1-600
grep -h "fetched the\|further donor\|copied the snapshot\|hashed and served" /tmp/join-wan-1000/joiner/train.log | head -8
grep -h "copied the snapshot\|hashed and served\|took a snapshot" /tmp/join-wan-1000/node-*/train.log
grep -vh "asks for another donor" /tmp/join-wan-1000/coordinator.log > $OUT/jw-coordinator.log 2>/dev/null
grep -h "outer step" /tmp/join-wan-1000/joiner/train.log | head -8
echo "=== end ($(date -u +%T))"
