#!/usr/bin/env bash
# DiLoCo with and without overlap, the same run otherwise (same config, same
# tokens: each node reads its own partition): a local swarm of N nodes per
# mode (intellect_train --local-nodes N), then each node's compute
# utilization (1 - time the training thread was held by outer steps / wall
# time; and its steady state, without the end's wait for the round still in
# flight, which a run pays once however long it is), the final validation
# loss (evaluated after the last outer step, so the same on every node), the
# wall time and the coordinator's agreement.
#
#   scripts/overlap_bench.sh [-n NODES] [-c CONFIG] [-m "none eager"] [-o OUT] [-b BUILD] [--set k=v]...
#
# A mode is a diloco.overlap value (none, eager, delayed), with suffixes:
# -fitted (diloco.eager_standin fitted), -arrival (diloco.apply_on_arrival
# true), -tauN (diloco.apply_after_steps N); e.g. eager-arrival, eager-fitted-arrival, eager-tau10.
#
# Examples:
#   # the dev VM figures in docs/PERFORMANCE.md (tiny model, emulated WAN links)
#   scripts/overlap_bench.sh -n 3 -o /tmp/overlap_bench --set train.steps=48 --set diloco.inner_steps=6 \
#     --set model.dim=48 --set model.ffn_dim=128 --set model.head_dim=12 --set model.n_layers=2 \
#     --set train.threads=1 --set train.eval_every=0 --set data.train=CORPUS/train_*.bin \
#     --set data.val=CORPUS/val_*.bin --set ckpt.save_final=false \
#     --set mesh.emulate_link_mbit=200 --set mesh.emulate_link_delay_ms=60 --set mesh.emulate_link_jitter_ms=10
#   # the GPU host (issue 15's benchmark): 4 nodes of the 150m config over a 1 Gbit/s, 50 ms link
#   scripts/overlap_bench.sh -n 4 -c configs/150m.json -m "none eager" --set train.device=cuda \
#     --set mesh.emulate_link_mbit=1000 --set mesh.emulate_link_delay_ms=50
#
# Every mode runs in a fresh directory (OUT/<mode>): a coordinator restores
# whatever state it finds in its out_dir, so runs must never share one.
set -euo pipefail

nodes=3
config=""
modes="none eager"
out="runs/overlap_bench"
build="$(cd "$(dirname "$0")/.." && pwd)/build"
sets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) nodes="$2"; shift 2 ;;
    -c) config="$2"; shift 2 ;;
    -m) modes="$2"; shift 2 ;;
    -o) out="$2"; shift 2 ;;
    -b) build="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "overlap_bench: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
train="$build/intellect_train"
[[ -x "$train" ]] || { echo "overlap_bench: $train not found (build first, or pass -b BUILD)" >&2; exit 2; }
cfg=()
[[ -n "$config" ]] && cfg=(--config "$config")

echo "overlap_bench: $nodes nodes, config ${config:-<embedded tiny>}, modes: $modes, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
printf '%-13s %-30s %-10s %-30s %-10s %-12s %-9s %s\n' mode "utilization per node (%)" "mean (%)" \
  "steady state per node (%)" "mean (%)" "val loss" "wall (s)" "coordinator"
for mode in $modes; do
  dir="$out/$mode"
  rm -rf "$dir"
  mkdir -p "$dir"
  t0=$(date +%s.%N)
  set +e
  # Suffixes: -fitted (diloco.eager_standin fitted), -arrival (diloco.apply_on_arrival), -tauN.
  mode_sets=(--set "diloco.overlap=${mode%%-*}")
  [[ "$mode" == *-fitted* ]] && mode_sets+=(--set diloco.eager_standin=fitted)
  [[ "$mode" == *-arrival* ]] && mode_sets+=(--set diloco.apply_on_arrival=true)
  if [[ "$mode" =~ -tau([0-9]+) ]]; then mode_sets+=(--set "diloco.apply_after_steps=${BASH_REMATCH[1]}"); fi
  "$train" --local-nodes "$nodes" "${cfg[@]}" "${sets[@]}" --set "train.out_dir=$dir" "${mode_sets[@]}" \
    > "$dir/swarm.log" 2>&1
  rc=$?
  set -e
  t1=$(date +%s.%N)
  utils=""
  steadies=""
  sum=0
  ssum=0
  for ((i = 0; i < nodes; i++)); do
    line=$(grep 'compute utilization [0-9.]*%' "$dir/node-$i/train.log" | tail -1 || true)
    u=$(grep -o 'compute utilization [0-9.]*%' <<<"$line" | grep -o '[0-9.]*' || echo "?")
    # Steady state: without the end's wait for the last round (overlap only;
    # blocking runs have no such wait, so theirs is the whole run's figure).
    su=$(grep -o 'steady-state utilization [0-9.]*%' <<<"$line" | grep -o '[0-9.]*' || echo "$u")
    utils+="$u "
    steadies+="$su "
    [[ "$u" != "?" ]] && sum=$(awk -v a="$sum" -v b="$u" 'BEGIN { print a + b }')
    [[ "$su" != "?" ]] && ssum=$(awk -v a="$ssum" -v b="$su" 'BEGIN { print a + b }')
  done
  mean=$(awk -v s="$sum" -v n="$nodes" 'BEGIN { printf "%.1f", s / n }')
  smean=$(awk -v s="$ssum" -v n="$nodes" 'BEGIN { printf "%.1f", s / n }')
  val=$(grep -o '"val_loss":[-0-9.e+]*' "$dir/node-0/metrics.jsonl" | tail -1 | cut -d: -f2 || true)
  [[ -n "$val" ]] && val=$(awk -v v="$val" 'BEGIN { printf "%.4f", v }')
  agreed=$(grep -o 'agreed: [0-9]*, diverged: [0-9]*' "$dir/swarm.log" | tail -1 || true)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  printf '%-13s %-30s %-10s %-30s %-10s %-12s %-9s %s\n' "$mode" "$utils" "$mean" "$steadies" "$smean" "${val:-?}" "$wall" "${agreed:-?}$([[ $rc -ne 0 ]] && echo " (exit $rc: see $dir/swarm.log)")"
done
