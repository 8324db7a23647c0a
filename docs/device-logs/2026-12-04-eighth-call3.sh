#!/usr/bin/env bash
# Eighth session, device call 3 (one H200), as run. Binaries: main after merging issue18-rotating-blocks
# (diloco.compression blocks4) and issue16-seal-path (frames sealed by OpenSSL's libcrypto; libsodium with
# --aead libsodium), with the donor's round pin (81bfb2b); packed at 3f6896c. Three parts, most important first, each bounded:
# issue 18's blocks4 cells at H = 100 (fp32 there: 4.6845, seventh session), issue 16's sealed/plaintext
# ratio at 4 nodes and 8 rings (plaintext, OpenSSL, libsodium alternating), and issue 15's whole join.
source scripts/device/env.sh
T0=$(date +%s)
echo "=== issue 18: blocks4 at H = 100, English corpus ($(date -u +%T))"
export DATA=data/english EVAL_BATCHES=64
timeout 300 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 -m "blocks4:0.2 blocks4:0.1429" \
  > $OUT/blocks4.log 2>&1
tail -12 $OUT/blocks4.log; cat "$OUT"/cq-H100/results.jsonl
echo "=== issue 16: ring-crypto, 4 nodes, 8 rings ($(date -u +%T))"
{ lscpu | grep "Model name"; devbin/bench_aead; } 2>&1 | tee $OUT/aead.log
for auth in secret keys; do for rep in 1 2; do for p in --plaintext "" "--aead libsodium"; do
  echo "--- auth $auth, ${p:-sealed (openssl)}, 8 rings, repeat $rep"
  timeout 40 devbin/bench_allreduce --nodes 4 --rings 8 --compression int8 --elems 33554432 --rounds 3 --auth $auth $p \
    2>&1 | grep -E "round [23]:"
done; done; done 2>&1 | tee $OUT/ring-crypto.log
left=$(( 560 - ($(date +%s) - T0) ))
echo "=== issue 15: join-wan, ${left} s left ($(date -u +%T))"
if [ $left -gt 120 ]; then
  RUN_DEADLINE_S=$((left - 60)) timeout $((left - 10)) bash scripts/device/routine.sh join-wan > $OUT/join-wan-all.log 2>&1
  grep -E "join_wan|joined at|caught up|utilization" $OUT/join-wan-all.log | tail -12
  grep -h '"joined"' /tmp/join-wan-1000/joiner/metrics.jsonl | head -1 | cut -c1-400
  grep -vh "asks for another donor" /tmp/join-wan-1000/coordinator.log > $OUT/jw-coordinator.log 2>/dev/null
  grep -h "outer step" /tmp/join-wan-1000/joiner/train.log | head -8
fi
echo "=== end ($(date -u +%T))"
