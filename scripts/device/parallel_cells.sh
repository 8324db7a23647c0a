#!/usr/bin/env bash
# Runs quality cells side by side on the one GPU and waits for all of them:
#
#   scripts/device/parallel_cells.sh NAME='COMMAND' [NAME='COMMAND']...
#
# Each COMMAND runs in the background under bash with OUT=$OUT/NAME (its own
# results directory), its output in $OUT/NAME.log; at the end each log's last
# lines are printed. CELL_TIMEOUT (seconds, default 480) bounds every cell.
#
# Why side by side: a quality cell (4 nodes of 150m at 8 × 256 tokens a step)
# keeps the H200 about a third busy, and a cell's result does not depend on
# timing (blocking DiLoCo, or overlap with diloco.apply_after_steps), so
# several cells in one call cost little more device time than one. Cells whose
# result depends on timing (utilization, apply_on_arrival) must run alone.
# Run from the repository root after `source scripts/device/env.sh`; unpack
# the data first (source scripts/quality_data.sh) so the cells do not race to.
set -uo pipefail
OUT=${OUT:-/tmp/out}
pids=() names=()
for cell in "$@"; do
  name="${cell%%=*}" cmd="${cell#*=}"
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ && "$cell" == *=* ]] || { echo "parallel_cells: '$cell' is not NAME=COMMAND" >&2; exit 2; }
  mkdir -p "$OUT/$name"
  OUT="$OUT/$name" timeout "${CELL_TIMEOUT:-480}" bash -c "$cmd" > "$OUT/$name.log" 2>&1 &
  pids+=($!) names+=("$name")
  echo "parallel_cells: $name started ($(date -u +%H:%M:%S)): $cmd"
done
rc=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; r=$?
  echo "=== ${names[$i]}: exit $r ($(date -u +%H:%M:%S))"
  tail -n "${TAIL_LINES:-12}" "$OUT/${names[$i]}.log"
  [ $r -eq 0 ] || rc=$r
done
exit $rc
