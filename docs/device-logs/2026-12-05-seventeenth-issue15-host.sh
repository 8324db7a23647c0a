#!/usr/bin/env bash
# Issue 15 on the one-GPU H200 host (16 cores; written in the seventeenth session, not yet run; ~7 min):
# is a 4-node round on this host bound by memory bandwidth? (docs/PERFORMANCE.md, "Is the host's 4-node
# round bound by memory?"). Pack the build before the one-pass owner (4850eff) beside this one:
#   git worktree add /tmp/base 4850eff && cmake -S /tmp/base -B /tmp/base/build -DCMAKE_BUILD_TYPE=Release &&
#   cmake --build /tmp/base/build -j2 --target bench_allreduce &&
#   EXTRA_BINS="/tmp/base/build/bench_allreduce:bench_allreduce_base" bash scripts/device/pack.sh
# Carry devbin.tgz.
#   1. bench_quantize on 1 and 16 threads at 2^28 values (1 GiB of fp32): each codec pass's GB/s, and the
#      direct owner's average of 3 contributions as separate passes and as one; if 16 threads scale far
#      below 16x one thread, and the one pass gains more at 16 threads than at 1, memory binds
#   2. the 4-node direct round at 277M values, this build against 4850eff, alternating (rounds 2-3)
source scripts/device/env.sh
lscpu | grep -E "Model name|^CPU\(s\)|Thread|MHz|L2|L3" | head -8
echo "=== bench_quantize, 1 and 16 threads ($(date -u +%T))"
timeout 150 devbin/bench_quantize --values 268435456 --threads 16 --repeat 3 2>&1 | grep -E "threads|int8 codec"
for b in bench_allreduce bench_allreduce_base bench_allreduce bench_allreduce_base; do
  echo "=== $b, 4 nodes, direct, 277M values ($(date -u +%T))"
  timeout 150 devbin/$b --nodes 4 --elems 277000000 --rounds 3 --compression int8 --rings 1 --all-reduce direct 2>&1 \
    | grep -E "round [23]:|whole outer step"
done
# Messages of 2^18 values (1 MB of fp32, within a core's L2 here) instead of 2^20: the owner's encode and
# decode of its average, and the commitment's pieces, then reread from L2 rather than memory.
for chunk in 262144 1048576; do
  echo "=== bench_allreduce, 4 nodes, direct, 277M values, --chunk $chunk ($(date -u +%T))"
  timeout 150 devbin/bench_allreduce --nodes 4 --elems 277000000 --rounds 3 --compression int8 --rings 1 \
    --all-reduce direct --chunk $chunk 2>&1 | grep -E "round [23]:|whole outer step"
done
echo "=== end ($(date -u +%T))"
