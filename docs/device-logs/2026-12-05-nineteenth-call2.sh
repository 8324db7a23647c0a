#!/usr/bin/env bash
# Nineteenth session, call 2 (one H200; ~9 min; carry devbin.tgz and data/english.tgz): the FP8 classifier
# (precision.fp8_classifier, new this session).
#   1. its tests: near bf16 products and recomputing the same (untied, tied, with and without FP8 weight
#      gradients), and the tiny config's loss curve against the CPU;
#   2. the 4-layer slice: ours FP8 with FP8 weight gradients, the same with the FP8 classifier, and
#      torch.compile + torchao float8 with its classifier in FP8 (0.929x of it without ours in FP8);
#   3. is it harmless on a real run: the 150m quality cell (4 DiLoCo nodes, H = 100, 1200 steps, English
#      corpus, seed 2): bf16 against FP8 everywhere (weight gradients and classifier too).
source scripts/device/env.sh
echo "=== FP8 classifier tests ($(date -u +%T))"
GTEST_FILTER='*Fp8Classifier*' timeout 100 bash scripts/device/routine.sh tests > $OUT/tests-run.log 2>&1
echo "exit $?"; grep -E "^\[  (FAILED|     OK|  PASSED)|Failure|actual|Which is|rel. error|tiny config" $OUT/tests.log | head -40
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
echo "=== quality cells ($(date -u +%T))"
export DATA=data/english EVAL_BATCHES=64
source scripts/quality_data.sh
Q="BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 --set train.seed=2 -m none"
CELL_TIMEOUT=330 TAIL_LINES=3 scripts/device/parallel_cells.sh \
  "bf16=$Q" \
  "fp8all=$Q --set precision.matmul=fp8 --set precision.fp8_weight_gradients=true --set precision.fp8_classifier=true"
for d in bf16 fp8all; do echo "$d: $(cat $OUT/$d/cq-H100/results.jsonl 2>/dev/null)"; done
echo "=== end ($(date -u +%T))"
