#!/usr/bin/env bash
# Nineteenth session, call 1 (one H200; ~7 min; carry devbin.tgz): the eighteenth session's next-call1 (the GPU
# suite, memcheck+initcheck over it, racecheck over the FP8 casts), then NEXT.md item 4's spare minute: the
# host's codec after the two-lane squares.
set -u
bash docs/device-logs/2026-12-05-eighteenth-next-call1.sh
echo "=== bench_quantize on the host ($(date -u +%T))"
source scripts/device/env.sh
timeout 90 devbin/bench_quantize --values 268435456 --threads 1 --repeat 3 2>&1 | tail -20
nproc; lscpu | grep -E "Model name" 
echo "=== end ($(date -u +%T))"
