#!/usr/bin/env bash
# Nineteenth session, call 2 (one GPU; ~8 min; carry devbin.tgz): the FP8 classifier (precision.fp8_classifier,
# new this session) after call 1 (H100) found its near-bf16 test's two defects (a layout lookup by offset as
# an index, and a norm gain's gradient 25.4% from bf16 products against a 25% bound), which also cut call 1's
# memcheck and initcheck short at that test.
#   1. the FP8 classifier tests (near bf16 products and recomputing the same: untied, tied, with and without
#      FP8 weight gradients; the tiny config's loss curve against the CPU);
#   2. memcheck and initcheck over the whole default filter again (the FP8 kernels and the FP8 classifier);
#   3. the 4-layer slice: ours FP8 with FP8 weight gradients, the same with the FP8 classifier, and
#      torch.compile + torchao float8 with its classifier in FP8.
source scripts/device/env.sh
echo "=== FP8 classifier tests ($(date -u +%T))"
GTEST_FILTER='*Fp8Classifier*' timeout 100 bash scripts/device/routine.sh tests > $OUT/tests-run.log 2>&1
echo "exit $?"; grep -E "^\[  (FAILED|     OK|  PASSED)|Failure|actual|Which is|against bf16|tiny config" $OUT/tests.log | head -40
echo "=== memcheck, initcheck ($(date -u +%T))"
SAN_TOOLS="memcheck initcheck" SAN_TIMEOUT=150 timeout 320 bash scripts/device/routine.sh sanitize > $OUT/sanitize.log 2>&1
echo "exit $?"; grep -E "=== |exit|ERROR SUMMARY|PASSED|FAILED" $OUT/sanitize.log | tail -12
for t in memcheck initcheck; do echo "$t: $(grep -c '^\[       OK' $OUT/sanitize-$t.log) tests OK"; done
common=(--config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1
  --set precision.master_weights=false --set precision.optim_state_dtype=bf16 --set model.n_layers=4
  --set train.recompute=auto --steps 10 --warmup 3 --no-kernels)
for v in fp8dw fp8head; do
  args=(--set precision.matmul=fp8 --set precision.fp8_weight_gradients=true)
  [ $v = fp8head ] && args+=(--set precision.fp8_classifier=true)
  echo "=== bench4 $v ($(date -u +%T))"
  timeout 60 devbin/bench_step "${common[@]}" "${args[@]}" > $OUT/bench4-$v.log 2>&1
  echo "exit $?"; grep -E "step:|ms/step|phases" $OUT/bench4-$v.log | head -4
done
echo "=== yardstick 4 layers, torch.compile + torchao float8, FP8 classifier ($(date -u +%T))"
LAYERS=4 FP8_HEAD=1 STEPS10B=10 timeout 150 bash scripts/device/routine.sh yard-fp8 > $OUT/yard4-run.log 2>&1
echo "exit $?"; tail -4 $OUT/yard-fp8.log
echo "=== end ($(date -u +%T))"
