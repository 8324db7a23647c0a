#!/usr/bin/env bash
# Issue 19 on nvidia-h100-x8 / nvidia-h200-x8 (written in the seventeenth session; not yet run). ~5 min.
# A DiLoCo run of a 4-GPU node, a 1-GPU node and a 2-GPU node together (scripts/hetero_swarm.sh: each node
# sees only its GPUs and shards FSDP over them), 8 rings, eager overlap, every link emulated at 2.5 Gbit/s
# and 50 ms one way: every outer step's agreement and each node's compute utilization.
# The 1b config at 8192 tokens per GPU per inner step (4 x 2048; a node of K GPUs takes K times the batch),
# H = 100, 600 steps (6 outer steps): a round's int8 traffic (about 1.6 GB a node) crosses the link in
# about 5 s against about 10 s of inner steps, so overlap can hide it. Then the same with overlap none,
# the blocking baseline. Carry devbin.tgz and data/english.tgz.
source scripts/device/env.sh
export DATA=data/english
source scripts/quality_data.sh
run() {  # $1: diloco.overlap
  echo "=== 4 + 1 + 2 GPUs, overlap $1 ($(date -u +%T))"
  RUN_DEADLINE_S=280 timeout 300 scripts/hetero_swarm.sh -g "4 1 2" -c configs/1b.json -b devbin -o $OUT/hetero-$1 \
    -r 2500 -d 50 --set diloco.rings=8 --set diloco.overlap=$1 --set diloco.inner_steps=100 --set train.steps=600 \
    --set train.seq_len=2048 --set train.micro_batch_size=4 --set train.eval_every=0 --set ckpt.save_final=false \
    --set precision.master_weights=false --set precision.optim_state_dtype=bf16 \
    --set "data.train=$QUALITY_TRAIN" --set "data.val=$QUALITY_VAL" --set data.tokenizer=byte > $OUT/hetero-$1.log 2>&1
  echo "exit $?"; tail -14 $OUT/hetero-$1.log
}
run eager
run none
cd "$OUT" && tar czf hetero-logs.tgz hetero-*/node-*/train.log hetero-*/coordinator.log 2>/dev/null; ls -la "$OUT" | head
echo "=== end ($(date -u +%T))"
