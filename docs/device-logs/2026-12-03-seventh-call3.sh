#!/usr/bin/env bash
# Seventh session, device call 3 (one H200), as run. Binaries: main after merging the frame openers
# (issue 16), signed sparse chunks checked on receipt (issue 16) and the AVX2 int8/int4 codecs
# (issue 15); devbin/*_base: the openers branch's CPU build before the codec change (commit c807542).
source scripts/device/env.sh
echo "=== codec, one core: base then new, twice ($(date -u +%T))"; lscpu | grep "Model name"
for r in 1 2; do for b in bench_quantize_base bench_quantize; do echo "--- $b"
  devbin/$b --values 16777216 --threads 1 --repeat 5 2>&1 | grep -E "int8|int4" ; done; done
echo "=== issue 16: sealed (openers on) vs --plaintext ($(date -u +%T))"
ELEMS=33554432 timeout 200 bash scripts/device/routine.sh ring-crypto 2>&1 | grep -E "^---|MB/s|round [23]"
echo "=== issue 16: sealed with openers 0 (the loop thread opens), secret, 8 rings ($(date -u +%T))"
for rep in 1 2; do devbin/bench_allreduce --nodes 4 --rings 8 --compression int8 --elems 33554432 --rounds 3 \
  --auth secret --openers 0 2>&1 | grep -E "MB/s|round [23]"; done
echo "=== issue 15: loopback, 277M values, base vs new codec ($(date -u +%T))"
for n in 4 2; do for k in 1 8; do for b in bench_allreduce_base bench_allreduce; do echo "--- $b, $n nodes, $k ring(s)"
  timeout 60 devbin/$b --nodes $n --elems 277000000 --rounds 3 --compression int8 --rings $k 2>&1 | grep -vE "^ *$" | tail -4
done; done; done
echo "=== issue 16: sparse 3% at 1 Gbit/s, secret vs keys ($(date -u +%T))"
for a in secret keys secret keys; do echo "--- auth $a"
  timeout 60 devbin/bench_allreduce --nodes 4 --rings 8 --compression sparse --density 0.03 --elems 67108864 \
    --rounds 3 --rate-mbit 1000 --auth $a 2>&1 | grep -vE "^ *$" | tail -3; done
echo "=== end ($(date -u +%T))"
