#!/usr/bin/env bash
# Twelfth session, call 1 (one H200): the cross-entropy cluster kernel (tests, bench4 kernel table:
# 2026-12-04-twelfth-ce.sh) and the ring on loopback with the whole outer step timed (bench_allreduce now
# prints MeshNode::average's wall time, the commitment and the round kept, beside the ring's seconds).
# Pack first: `bash scripts/device/pack.sh`, carry devbin.tgz.
source scripts/device/env.sh
echo "=== host ($(date -u +%T))"
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|MHz" | head -8
grep -o -w -m1 "sha_ni" /proc/cpuinfo || echo "no sha_ni"
cat /sys/kernel/mm/transparent_hugepage/enabled
bash docs/device-logs/2026-12-04-twelfth-ce.sh tests bench
for cfg in "4 1" "2 1" "4 8"; do
  set -- $cfg
  echo "=== ring: $1 nodes, $2 ring(s), 277M values, int8 ($(date -u +%T))"
  timeout 150 devbin/bench_allreduce --nodes $1 --elems 277000000 --rounds 3 --compression int8 --rings $2 2>&1 | tail -10
done
echo "=== end ($(date -u +%T))"
