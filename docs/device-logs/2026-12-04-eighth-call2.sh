#!/usr/bin/env bash
# Eighth session, device call 2 (one H200), as run. Binaries: main at f6e2055 (the run's only member is
# never left out; the reference norm forgotten on a rewind). Issue 15: the whole join at 150m over emulated
# 1 Gbit/s, 50 ms links, with a run of 600 steps that outlasts the join (call 1's 120-step run ended during it).
source scripts/device/env.sh
mkdir -p $OUT
echo "=== join-wan ($(date -u +%T))"
RUN_DEADLINE_S=300 timeout 420 bash scripts/device/routine.sh join-wan > $OUT/join-wan-all.log 2>&1
tail -45 $OUT/join-wan-all.log
mkdir -p $OUT/jw
for f in /tmp/join-wan-1000/*/train.log /tmp/join-wan-1000/coordinator.log; do
  d=$(basename $(dirname $f)); cp $f $OUT/jw/$d-$(basename $f) 2>/dev/null; done
grep -h '"joined"' /tmp/join-wan-1000/joiner/metrics.jsonl | head -2
echo "=== end ($(date -u +%T))"
