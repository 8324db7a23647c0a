#!/usr/bin/env bash
# Sixteenth session, call 4 (one H200): FP8 linear layers (issue 14), after call 3's 10B figure.
#   1. the 4-layer slice with FP8 linear layers and the yardstick (torch.compile, bf16, 4 layers), then
#      the same slice with bf16 products, all in this call
#   2. whether FP8 is harmless on a real run: the 150m config, 4 DiLoCo nodes (fp32 outer steps), H = 100,
#      1200 steps on the English corpus, bf16 products against FP8, final validation loss (64 batches)
# Carry devbin.tgz and data/english.tgz.
source scripts/device/env.sh
echo "=== bench4 fp8 + yardstick ($(date -u +%T))"
BENCH_ARGS="--set precision.matmul=fp8" timeout 200 bash scripts/device/routine.sh bench4 > $OUT/r1.log 2>&1
echo "exit $?"; cp $OUT/bench4.log $OUT/bench4-fp8.log; grep -vE "^ +[a-z_]+ +[0-9]" $OUT/bench4-fp8.log | tail -22
echo "=== bench4 bf16 ($(date -u +%T))"
timeout 100 devbin/bench_step --config configs/10b.json --set train.batch_size=1 --set train.micro_batch_size=1 \
  --set precision.master_weights=false --set precision.optim_state_dtype=bf16 --set model.n_layers=4 \
  --set train.recompute=auto --steps 10 --warmup 3 --no-kernels > $OUT/bench4-bf16.log 2>&1
echo "exit $?"; grep -E "ms/step|MFU|phases|median" $OUT/bench4-bf16.log | head -6
export DATA=data/english EVAL_BATCHES=64
O=$OUT
echo "=== quality: bf16 products ($(date -u +%T))"
OUT=$O/q16 timeout 140 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 -m "none" \
  > $O/quality-bf16.log 2>&1
echo "exit $?"; tail -2 $O/quality-bf16.log
echo "=== quality: FP8 products ($(date -u +%T))"
OUT=$O/q8 timeout 160 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 -m "none" \
  --set precision.matmul=fp8 > $O/quality-fp8.log 2>&1
echo "exit $?"; tail -2 $O/quality-fp8.log
echo "=== end ($(date -u +%T))"
