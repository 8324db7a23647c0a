#!/usr/bin/env bash
# Nineteenth session, call 3 (one GPU; ~5 min; carry devbin.tgz and data/english.tgz): is the FP8 classifier
# harmless on a real run? The 150m quality cell (4 DiLoCo nodes, fp32 outer steps, H = 100, 1200 steps on the
# English corpus, seed 2, validation over 64 batches): bf16 products against FP8 everywhere (linear layers
# with their weight gradients, and the classifier). The seventeenth session's cells on the H200: bf16 4.6829
# (sixteenth), FP8 +0.19%, FP8 with FP8 weight gradients +0.34%.
source scripts/device/env.sh
export DATA=data/english EVAL_BATCHES=64
source scripts/quality_data.sh
Q="BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 --set train.seed=2 -m none"
echo "=== quality cells ($(date -u +%T))"
CELL_TIMEOUT=330 TAIL_LINES=3 scripts/device/parallel_cells.sh \
  "bf16=$Q" \
  "fp8all=$Q --set precision.matmul=fp8 --set precision.fp8_weight_gradients=true --set precision.fp8_classifier=true"
for d in bf16 fp8all; do echo "$d: $(cat $OUT/$d/cq-H100/results.jsonl 2>/dev/null)"; done
echo "=== end ($(date -u +%T))"
