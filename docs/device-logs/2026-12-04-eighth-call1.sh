#!/usr/bin/env bash
# Eighth session, device call 1 (one H200), as run. Binaries: main at the divergence fix (b0a1686 + test).
# Issue 15: the whole join at 150m over emulated 1 Gbit/s, 50 ms links (the seventh session's run was cut
# off with nothing ended 270 s after the joiner started; RUN_DEADLINE_S makes join_wan.sh print every
# process's last lines past it), then the 4-node loopback ring's parts, sealed and --plaintext, by codec threads.
source scripts/device/env.sh
mkdir -p $OUT
echo "=== join-wan ($(date -u +%T))"
RUN_DEADLINE_S=240 timeout 330 bash scripts/device/routine.sh join-wan > $OUT/join-wan-all.log 2>&1
tail -60 $OUT/join-wan-all.log
for f in /tmp/join-wan-1000/*/train.log /tmp/join-wan-1000/coordinator.log; do
  d=$(basename $(dirname $f)); cp $f $OUT/jw-$d-$(basename $f) 2>/dev/null; done
echo "=== issue 15: loopback ring parts, 277M values ($(date -u +%T))"
for n in 4 2; do for extra in "" "--plaintext" "--codec-threads 2" "--codec-threads 4"; do
  echo "--- $n nodes, 1 ring $extra"
  timeout 60 devbin/bench_allreduce --nodes $n --elems 277000000 --rounds 3 --compression int8 --rings 1 $extra 2>&1 \
    | grep -vE "^ *$" | tail -5
done; done 2>&1 | tee $OUT/ring-parts.log
echo "=== end ($(date -u +%T))"
