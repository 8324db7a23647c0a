#!/usr/bin/env bash
# Seventh session, device call 2 (one H200), as run: issue 18's sparse 3% recipe at H = 100 on the
# English corpus, one cell after another (call 1 ran them side by side and they ran out of time:
# cells share the GPU by time slicing, so side by side is no faster).
source scripts/device/env.sh
export DATA=data/english EVAL_BATCHES=64
timeout 500 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 -m \
  "sparse:0.03+diloco.error_feedback_decay=0.9 sparse:0.03+diloco.outer_lr=1.5 sparse:0.03+diloco.error_feedback_decay=0.9+diloco.outer_lr=1.5"
cat "$OUT"/cq-H100/results.jsonl
