#!/usr/bin/env bash
# NOT RUN: written for the twelfth session's second call, which was refused (no device lent again that
# session). The plan for the next call: the ring on loopback after the kept round is written in place
# (PlannedRound), whole outer step timed; then the 4-layer bench_step without and with the kernel table
# (call 1's bench4 with the kernel table printed nothing in 200 s: line-buffered here to see where it is).
# The cluster cross-entropy kernel is opt-in now: add --ce-cluster to a bench_step line to time the step
# with it (the kernel table times both kernels either way).
source scripts/device/env.sh
for cfg in "4 1" "2 1"; do
  set -- $cfg
  echo "=== ring: $1 nodes, $2 ring(s), 277M values, int8 ($(date -u +%T))"
  timeout 150 devbin/bench_allreduce --nodes $1 --elems 277000000 --rounds 3 --compression int8 --rings $2 2>&1 | tail -9
done
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
        --set precision.master_weights=false --set precision.optim_state_dtype=bf16
        --set model.n_layers=4 --set train.recompute=auto)
echo "=== bench4, no kernel table ($(date -u +%T))"
timeout 100 devbin/bench_step "${common[@]}" --steps 10 --warmup 3 --no-kernels > $OUT/bench4.log 2>&1; echo "exit $?"
grep -E "ms/step|MFU|tokens/s" $OUT/bench4.log | head -4
echo "=== bench4, no kernel table, the step's loss on the cluster kernel ($(date -u +%T))"
timeout 100 devbin/bench_step "${common[@]}" --steps 10 --warmup 3 --no-kernels --ce-cluster > $OUT/bench4-ce-cluster.log 2>&1
echo "exit $?"; grep -E "ms/step|MFU|tokens/s" $OUT/bench4-ce-cluster.log | head -4
echo "=== bench4, kernel table, line-buffered ($(date -u +%T))"
timeout 240 stdbuf -oL -eL devbin/bench_step "${common[@]}" --steps 3 --warmup 1 2>&1 \
  | while IFS= read -r l; do echo "$(date -u +%T) $l"; done > $OUT/bench4-kernels.log; echo "exit ${PIPESTATUS[0]}"
grep -E "ms/step|cross-entropy|lm_head" $OUT/bench4-kernels.log | head; tail -4 $OUT/bench4-kernels.log
bash docs/device-logs/2026-12-04-twelfth-ce.sh sanitize
echo "=== end ($(date -u +%T))"
