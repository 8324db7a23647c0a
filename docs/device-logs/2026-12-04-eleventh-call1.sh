#!/usr/bin/env bash
# Eleventh session, device call 1 (one H200): issue 15's whole join with the snapshot's shared prefix striped
# over further donors (mesh.state_stripe_donors, default 3; with 2 nodes: 1 further donor) and, new, the
# joiner's downlink emulated at the link rate too. The same setting as the tenth session's call 5: 150m,
# 1 Gbit/s and 50 ms on every link, 2 nodes + a joiner at outer step 2, H = 100 inner steps of 64 x 1024 tokens.
source scripts/device/env.sh
BATCH=64 MICRO=16 H=100 STEPS=600 JOIN_AT=2 RUN_DEADLINE_S=400 timeout 500 bash scripts/device/routine.sh join-wan \
  > $OUT/join-wan-all.log 2>&1
echo "exit $?"
grep -E "join_wan|joined at|joiner:|link |donor|utilization|late" $OUT/join-wan-all.log | tail -14
grep -h '"joined"' /tmp/join-wan-1000/joiner/metrics.jsonl | head -1 | cut -c1-600
grep -h "fetched the\|further donor" /tmp/join-wan-1000/joiner/train.log | head -8
grep -vh "asks for another donor" /tmp/join-wan-1000/coordinator.log > $OUT/jw-coordinator.log 2>/dev/null
grep -h "outer step" /tmp/join-wan-1000/joiner/train.log | head -8
echo "=== end ($(date -u +%T))"
