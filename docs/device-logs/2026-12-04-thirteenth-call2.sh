#!/usr/bin/env bash
# Thirteenth session, call 2 (one H200), build 26f5792 (as call 1): where a 4-node loopback round's CPU goes
# on the H200 host, and three cheap levers, before changing code.
#   1. perf (the dev VM's perf 6.1 and its libraries, carried in perfpack.tgz) over 4 nodes, 277M values,
#      int8, 10 rounds, sampling from 9 s (after the input is generated); the unstripped binary for symbols
#   2. glibc's heap trimming: GLIBC_TUNABLES trim 512 MiB, mmap threshold 32 MiB, against the default,
#      alternating (the dev VM's profile: 6-7% of samples in page faults from message buffers)
#   3. fewer threads per node: --codec-threads 4 and --openers 2 (defaults on 16 cores: 8 and 4)
source scripts/device/env.sh
tar xzf perfpack.tgz
P="env LD_LIBRARY_PATH=$PWD/perf/lib:$LD_LIBRARY_PATH perf/perf"
ring() { timeout 120 "$@" 2>&1 | grep -E "round [23]:|whole" | tail -4; }
echo "=== perf, 4 nodes ($(date -u +%T))"
$P record -o $OUT/perf.data -F 499 -D 9000 -- perf/bench_allreduce.dbg --nodes 4 --elems 277000000 --rounds 10 \
  --compression int8 > $OUT/perf-run.log 2>&1; echo "exit $?"; tail -3 $OUT/perf-run.log
$P report -i $OUT/perf.data --no-children --sort dso 2>/dev/null | grep "%" | head -12
$P report -i $OUT/perf.data --no-children --sort dso,sym 2>/dev/null | grep "%" | head -60 > $OUT/perf-top.txt
cat $OUT/perf-top.txt | cut -c1-120
rm -f $OUT/perf.data
for i in 1 2; do
  echo "=== default allocator, 4 nodes ($(date -u +%T))"
  ring devbin/bench_allreduce --nodes 4 --elems 277000000 --rounds 3 --compression int8
  echo "=== GLIBC_TUNABLES trim 512M mmap 32M, 4 nodes ($(date -u +%T))"
  GLIBC_TUNABLES=glibc.malloc.trim_threshold=536870912:glibc.malloc.mmap_threshold=33554432 \
    ring devbin/bench_allreduce --nodes 4 --elems 277000000 --rounds 3 --compression int8
done
echo "=== --codec-threads 4, 4 nodes ($(date -u +%T))"
ring devbin/bench_allreduce --nodes 4 --elems 277000000 --rounds 3 --compression int8 --codec-threads 4
echo "=== --openers 2, 4 nodes ($(date -u +%T))"
ring devbin/bench_allreduce --nodes 4 --elems 277000000 --rounds 3 --compression int8 --openers 2
echo "=== end ($(date -u +%T))"
