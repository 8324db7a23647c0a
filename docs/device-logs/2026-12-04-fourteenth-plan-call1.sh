#!/usr/bin/env bash
# Fourteenth session's plan for the next device call (no device was lent this session; kept for the next).
# Issue 15: the whole outer step, 4 and 2 nodes on the H200 host, the ring against the direct pattern
# (diloco.all_reduce "direct", direct_allreduce.h: each contribution's committed chunks sent once to their
# segment's owner; a node encodes S/N values in the round instead of S). The thirteenth session's 4-node
# perf put the int8 encoder at 23% of the host's CPU, half of it the ring's hops; the dev VM (2 cores)
# measured the direct pattern's encoder at 38% fewer samples but more page zeroing (the owner's average
# copied to each of N - 1 peers), and the same CPU per node-round within noise. This call decides on the
# 16-core host. Alternating, rounds 2-3 of each run; ~1.5 min a 4-node run at 277M values.
# Then issue 18: blocks2 1/3 through the direct pattern (each contribution quantized once: its 2-bit error
# is in its own error-feedback buffer, none is added at the hops) against the ring, outer lr 1.25, and fp32.
# Carry devbin.tgz and data/english.tgz.
source scripts/device/env.sh
echo "=== issue 15: ring against direct, whole outer step ($(date -u +%T))"
for pattern in ring direct ring direct; do
  for nodes in 4 2; do
    echo "--- $pattern, $nodes nodes"
    timeout 200 devbin/bench_allreduce --nodes $nodes --elems 277000000 --rounds 3 --compression int8 --rings 1 \
      --all-reduce $pattern 2>&1 | grep -E "round [23]:|whole outer step"
  done
done
echo "=== issue 18: blocks2 1/3, ring against direct, H = 100 ($(date -u +%T))"
export DATA=data/english EVAL_BATCHES=64
timeout 420 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 \
  -m "blocks2:0.3334+diloco.all_reduce=direct+diloco.outer_lr=1.25 blocks2:0.3334+diloco.outer_lr=1.25 none" \
  > $OUT/blocks2-direct.log 2>&1
echo "exit $?"
tail -9 $OUT/blocks2-direct.log; cat "$OUT"/cq-H100/results.jsonl
echo "=== end ($(date -u +%T))"
