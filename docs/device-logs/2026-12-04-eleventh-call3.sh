#!/usr/bin/env bash
# Eleventh session, device call 3 (one H200). Binaries: main after merging issue18-blocks2 (rotating 2-bit
# blocks, the helper's branch) onto the join stripes. Two parts, each bounded:
#  1. issue 18: the 150m at H = 100 on the English corpus, 1200 steps (12 outer steps), fp32 DiLoCo beside
#     blocks2 at 1/3 and 1/4 of the blocks, in one call, cells one after another;
#  2. issue 15: compute utilization at 1 Gbit/s and 50 ms with eager overlap and apply_after_steps 20 (the
#     setting whose quality was within 1% of blocking, seventh session), int8 ring, 4 nodes of 150m.
source scripts/device/env.sh
echo "=== issue 18: blocks2 at H = 100, English corpus ($(date -u +%T))"
export DATA=data/english EVAL_BATCHES=64
timeout 330 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 \
  -m "none blocks2:0.3334 blocks2:0.25" > $OUT/blocks2.log 2>&1
echo "exit $?"
tail -8 $OUT/blocks2.log; cat "$OUT"/cq-H100/results.jsonl
unset DATA EVAL_BATCHES
echo "=== issue 15: eager, apply_after_steps 20, 1 Gbit/s ($(date -u +%T))"
MODES="eager-tau20" BATCH=48 H=100 STEPS=300 LINK_MBIT=1000 LINK_DELAY=50 \
  EXTRA_SETS="--set diloco.compression=int8" timeout 240 bash scripts/device/routine.sh overlap150m \
  > $OUT/overlap150m-tau20.log 2>&1
echo "exit $?"
grep -E "^mode|^eager|agreed" $OUT/overlap150m-tau20.log | head -5
python3 -c "
import json
for i in range(4):
    at = [(json.loads(l)['step'], json.loads(l)['outer'].get('applied_after_steps'), round(json.loads(l)['outer']['outer_blocked_s'], 2))
          for l in open('$OUT/overlap150m-1000-eager-tau20-node%d.jsonl' % i) if 'outer' in json.loads(l)]
    print('node', i, 'applied at (step, after, held s):', at)" 2>&1 | head -4
echo "=== end ($(date -u +%T))"
