#!/usr/bin/env bash
# Issue 18's quality table on the GPU host: 4 nodes of the 150m config on one
# H200 (intellect_train --local-nodes 4, each node a process on the same GPU),
# Llama 3 tokens, the same tokens for every cell, one H per call (each call
# fits the device's 10-minute limit per command):
#
#   scripts/compression_quality_gpu.sh 100   # 5 cells, ~4 min (estimate)
#   scripts/compression_quality_gpu.sh 25    # 5 cells, ~5.5 min (12 outer steps; fp32's
#                                            # rounds move 6.5 GB per node over loopback)
#   scripts/compression_quality_gpu.sh 25 -m "int4 sparse:0.03"   # extra arguments go to
#                                            # compression_quality.sh (here: fewer cells)
#   scripts/compression_quality_gpu.sh 100 -m "none sparse:0.03 sparse:0.03+diloco.outer_lr=2"
#                                            # sparse with its SparseLoCo defaults, and a
#                                            # per-cell override after '+'
#
# The data (DATA, default data/shakespeare): a directory of Llama 3 token shards,
# carried to the device.
#   data/shakespeare   tinyshakespeare: 270k train tokens (shard_000000.bin), 32k validation
#                      (shard_000001.bin); 300 steps already pass ~9 times over each node's
#                      quarter, so long runs overfit. Made here once with
#                        build/prepare_data --tokenizer ../shared/data/llama3/tokenizer.json \
#                          --input ../shared/data/text/tinyshakespeare.txt --output data/shakespeare --shard-tokens 270000
#   data/english       16.0M train tokens (train/shard_000000.bin), 0.33M validation
#                      (val/shard_000000.bin), from Debian's text packages: made here with
#                      scripts/prepare_english_corpus.sh, which also writes data/english.tgz
#                      (25 MB); carry data/english.tgz (the shards themselves are 65 MB, over
#                      the carry limit): this script unpacks it when data/english is missing.
#                      1200 steps read 9.8M tokens of it, none twice.
#
# Issue 18's H = 100 comparison on the English corpus (12 outer steps, no token read twice),
# fp32 against sparse 3% in one call, ~5 min (estimate: each 1200-step cell took 100-135 s
# on tinyshakespeare, 2026-12-03, plus ~15 s of start per cell):
#   DATA=data/english EVAL_BATCHES=64 scripts/compression_quality_gpu.sh 100 -m "none sparse:0.03" \
#     --set train.steps=1200
# Rotating int4 blocks (diloco.compression blocks4; ":X" is diloco.block_fraction, rounded down
# to 1/P), against fp32 at H = 100 on the English corpus, 12 outer steps. A round sends 1/P of the
# blocks (P = 5: 1/35.6 of fp32's bytes; P = 7: 1/49.8) and the run's last outer step every block
# (1/7.1), so the 12 steps average 1/26.7 (P = 5) and 1/33.2 (P = 7, "blocks4:0.1429"); estimate
# ~2.5 min a cell (the 1200-step cells above took 100-135 s):
#   DATA=data/english EVAL_BATCHES=64 scripts/compression_quality_gpu.sh 100 -m "none blocks4:0.2 blocks4:0.1429" \
#     --set train.steps=1200
# Rotating int2 blocks (diloco.compression blocks2, dist/quantize2.h: 2.5 bits a value with the
# scales): 1/3 of the blocks a round ("blocks2:0.3334", P = 3: 1/38.4 of fp32's bytes in steady
# rounds, 1/12.8 in the last full round, ~1/32.9 over 12 outer steps) or 1/4 ("blocks2:0.25",
# P = 4: 1/51.2 steady, ~1/41.0 over the run); ~2.5 min a cell (estimate, as blocks4's):
#   DATA=data/english EVAL_BATCHES=64 scripts/compression_quality_gpu.sh 100 --set train.steps=1200 \
#     -m "blocks2:0.3334 blocks2:0.25"
# (EVAL_BATCHES, default 16: validation batches of 8 × 256 tokens at the end; 64 = 131k of
# the English validation tokens, for a steadier figure; tinyshakespeare has 32k in all.)
#
# configs/150m.json leaves the outer step to the defaults, so sparse cells get
# SparseLoCo's (decayed error feedback, SGD lr 1, no momentum), blocks4 and blocks2 cells
# plain averaging (SGD lr 1, no momentum, undecayed error feedback) and the
# others DiLoCo's Nesterov step (lr 0.7, momentum 0.9).
#
# Estimates, not measured: ~15 s to start 4 CUDA processes, ~100 ms a step
# with 4 processes sharing the GPU (30 s for 300 steps), 1-5 s per outer step
# (host copies of 1.09 GB, the ring on loopback, sparse's top-k on 4 lanes).
#
# Run from the repository root on the device after `source scripts/device/env.sh`
# (binaries in devbin/ from a CUDA build packed by scripts/device/pack.sh),
# with the data carried (above). Results go to $OUT/cq-H<h>/ (swarm logs,
# metrics, results.jsonl) and the table to stdout.
#
# Settings and why: 300 inner steps of 8 × 256 tokens per node (4 nodes:
# 2.5M tokens in all); cosine schedule with 30 warmup steps (the config's
# 500-step warmup would never end); 4 parallel rings so the host-side codecs
# use 4 cores per node; H = 100 gives 3 outer steps, H = 25 gives 12.
set -euo pipefail
h="${1:?usage: compression_quality_gpu.sh H (25 or 100) [compression_quality.sh arguments]}"
shift
cd "$(dirname "$0")/.."
bin="${BIN:-devbin}"
[[ -x "$bin/intellect_train" ]] || bin=build
source scripts/quality_data.sh
scripts/compression_quality.sh -n 4 -c configs/150m.json -H "$h" -b "$bin" -o "${OUT:-/tmp/out}/cq-H$h" \
  --set train.device=cuda --set train.steps=300 --set train.batch_size=8 --set train.micro_batch_size=8 \
  --set train.seq_len=256 --set train.log_every=50 --set train.eval_every=0 --set train.eval_batches="${EVAL_BATCHES:-16}" \
  --set optim.schedule.type=cosine --set optim.schedule.warmup_steps=30 --set optim.schedule.decay_steps=0 \
  --set optim.schedule.min_lr_ratio=0.1 \
  --set "data.train=$QUALITY_TRAIN" --set "data.val=$QUALITY_VAL" \
  --set data.tokenizer=byte --set diloco.rings=4 --set mesh.round_timeout_ms=1200000 "$@"
