#!/usr/bin/env bash
# Sixteenth session, call 1 (one H200), build d740c59. NEXT.md's calls 1 and 2, and a profile to steer
# the CPU work of issue 15:
#   1. the kept round's buffer recycled (RoundBuffers) against a fresh one each round
#      (--no-round-buffer-reuse), ring, 277M values, 4 and 2 nodes, alternating (issue 15)
#   2. perf over 4 nodes, the direct pattern, 277M values, rounds from 9 s on (after the input is made)
#   3. issue 18's pairing at a second seed: blocks2 1/3 through the ring at outer lr 1.25, seed 2, and fp32
# Carry devbin.tgz, perfpack.tgz and data/english.tgz.
source scripts/device/env.sh
tar xzf perfpack.tgz
echo "=== kept rounds recycled against fresh, 277M values ($(date -u +%T)), $(nproc) cores"
for flag in "" --no-round-buffer-reuse "" --no-round-buffer-reuse; do
  for nodes in 4 2; do
    echo "--- ring ${flag:-recycled}, $nodes nodes ($(date -u +%T))"
    timeout 120 devbin/bench_allreduce --nodes $nodes --elems 277000000 --rounds 3 --compression int8 --rings 1 \
      $flag 2>&1 | grep -E "round [23]:|whole outer step"
  done
done
P="env LD_LIBRARY_PATH=$PWD/perf/lib:$LD_LIBRARY_PATH perf/perf"
echo "=== perf, 4 nodes, direct ($(date -u +%T))"
$P record -o $OUT/perf.data -F 499 -D 9000 -- perf/bench_allreduce.dbg --nodes 4 --elems 277000000 --rounds 10 \
  --compression int8 --all-reduce direct > $OUT/perf-run.log 2>&1; echo "exit $?"; grep -E "whole" $OUT/perf-run.log | tail -3
$P report -i $OUT/perf.data --no-children --sort dso 2>/dev/null | grep "%" | head -12
$P report -i $OUT/perf.data --no-children --sort dso,sym 2>/dev/null | grep "%" | head -70 > $OUT/perf-top.txt
cut -c1-130 $OUT/perf-top.txt
rm -f $OUT/perf.data
export DATA=data/english EVAL_BATCHES=64
O=$OUT
echo "=== seed 2: ring lr 1.25 ($(date -u +%T))"
OUT=$O/s2 timeout 280 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 --set train.seed=2 \
  -m "blocks2:0.3334+diloco.outer_lr=1.25 none" > $O/seed2-ring.log 2>&1
echo "exit $?"; tail -3 $O/seed2-ring.log
echo "=== end ($(date -u +%T))"
