#!/usr/bin/env bash
# Seventeenth session, call C (one H200; ~4 min): is FP8 harmless on a real run? The 150m config, 4 DiLoCo
# nodes (fp32 outer steps), H = 100, 1200 steps on the English corpus, seed 2: bf16 products, FP8 (forward,
# dX) and FP8 with FP8 weight gradients, side by side on the GPU (a cell's result does not depend on
# timing). Final validation loss over 64 batches; bf16's seed-2 cell was 4.6829 in the sixteenth session's
# call 1 (build d740c59). Carry devbin.tgz and data/english.tgz.
source scripts/device/env.sh
export DATA=data/english EVAL_BATCHES=64
source scripts/quality_data.sh
Q="BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 --set train.seed=2 -m none"
echo "=== quality cells ($(date -u +%T))"
CELL_TIMEOUT=330 TAIL_LINES=3 scripts/device/parallel_cells.sh \
  "bf16=$Q" \
  "fp8=$Q --set precision.matmul=fp8" \
  "fp8dw=$Q --set precision.matmul=fp8 --set precision.fp8_weight_gradients=true"
for d in bf16 fp8 fp8dw; do echo "$d: $(cat $OUT/$d/cq-H100/results.jsonl 2>/dev/null)"; done
echo "=== end ($(date -u +%T))"
