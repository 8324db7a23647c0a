#!/usr/bin/env bash
# Seventh session, device call 1 (one H200), as run: issue 18's sparse recipe at H = 100 and issue 15's
# eager with apply_after_steps, side by side (results independent of timing), then issue 15's utilization
# at 100 Mbit/s with apply_after_steps (alone: timing matters there).
source scripts/device/env.sh
export DATA=data/english EVAL_BATCHES=64
source scripts/quality_data.sh
Q="BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 -m"
O="H=100 STEPS=1200 MODES=eager-tau20 bash scripts/device/routine.sh overlap-quality"
CELL_TIMEOUT=400 TAIL_LINES=6 scripts/device/parallel_cells.sh \
  "sp-b80-lr1=$Q sparse:0.03" \
  "sp-b90-lr1=$Q sparse:0.03+diloco.error_feedback_decay=0.9" \
  "sp-b80-lr15=$Q sparse:0.03+diloco.outer_lr=1.5" \
  "sp-b90-lr15=$Q sparse:0.03+diloco.error_feedback_decay=0.9+diloco.outer_lr=1.5" \
  "eager-tau20-fp32=OQ_TAG=-fp32 EXTRA_SETS='--set diloco.compression=none' $O" \
  "eager-tau20-int8=OQ_TAG=-int8 EXTRA_SETS='--set diloco.compression=int8' $O"
for d in "$OUT"/sp-*; do cat "$d"/cq-H100/results.jsonl; done
for t in fp32 int8; do
  grep -E "^eager-tau20 1200|agreed" "$OUT/eager-tau20-$t/overlap-quality-H100.log"
  python3 -c "
import json
at = [(json.loads(l)['step'], json.loads(l)['outer'].get('applied_after_steps'), round(json.loads(l)['outer']['outer_blocked_s'], 2))
      for l in open('/tmp/oq-H100-$t/eager-tau20/node-0/metrics.jsonl') if 'outer' in json.loads(l)]
print('$t applied at (step, after, held s):', at)"
done
MODES="eager-tau20" BATCH=48 H=100 STEPS=300 LINK_MBIT=100 LINK_DELAY=100 \
  EXTRA_SETS="--set diloco.compression=sparse --set diloco.sparse_density=0.03" \
  timeout 240 bash scripts/device/routine.sh overlap150m
cd "$OUT" && tar czf call1-logs.tgz --exclude='*.tgz' $(ls) 2>/dev/null; ls -la "$OUT" | head -30
