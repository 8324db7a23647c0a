#!/usr/bin/env bash
# Issue 18, a third seed for the setting that met the goal (blocks2 1/3 through the direct pattern, outer
# lr 1.25: +0.85% and +0.61% of fp32 with seeds 1 and 2, fifteenth session), then the ring at lr 1.25 with
# seed 2 (its seed-1 cell: +1.21%). About 80 s a blocks2 cell and 100 s fp32 on one H200.
# Carry devbin.tgz and data/english.tgz.
source scripts/device/env.sh
export DATA=data/english EVAL_BATCHES=64
O=$OUT
echo "=== seed 3: direct lr 1.25, fp32 ($(date -u +%T))"
OUT=$O/s3 timeout 200 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 --set train.seed=3 \
  -m "blocks2:0.3334+diloco.all_reduce=direct+diloco.outer_lr=1.25 none" > $O/seed3.log 2>&1
echo "exit $?"; tail -4 $O/seed3.log
echo "=== seed 2: ring lr 1.25 ($(date -u +%T))"
OUT=$O/s2 timeout 100 env BIN=devbin scripts/compression_quality_gpu.sh 100 --set train.steps=1200 --set train.seed=2 \
  -m "blocks2:0.3334+diloco.outer_lr=1.25" > $O/seed2-ring.log 2>&1
echo "exit $?"; tail -3 $O/seed2-ring.log
echo "=== end ($(date -u +%T))"
