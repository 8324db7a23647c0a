#!/usr/bin/env bash
# Issue 15 on the H200 host (16 cores): the whole outer step at 277M values, 4 and 2 nodes, with the kept
# round's buffer recycled (RoundBuffers, fifteenth session) against a fresh one each round
# (--no-round-buffer-reuse), alternating. The dev VM measured about a tenth less CPU per node-round for
# the ring at 4 nodes (PERFORMANCE.md, "Kept rounds' buffers recycled"); the host measured 2.9-3.3
# CPU-seconds per node-round and 1.16-1.35 GB/s at 4 nodes before it. About 2 minutes.
# Carry devbin.tgz.
source scripts/device/env.sh
echo "=== kept rounds recycled against fresh, 277M values ($(date -u +%T)), $(nproc) cores"
for flag in "" --no-round-buffer-reuse "" --no-round-buffer-reuse; do
  for nodes in 4 2; do
    echo "--- ring ${flag:-recycled}, $nodes nodes ($(date -u +%T))"
    timeout 120 devbin/bench_allreduce --nodes $nodes --elems 277000000 --rounds 3 --compression int8 --rings 1 \
      $flag 2>&1 | grep -E "round [23]:|whole outer step"
  done
done
echo "=== end ($(date -u +%T))"
