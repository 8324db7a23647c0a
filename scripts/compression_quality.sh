#!/usr/bin/env bash
# Issue 18's quality table: the same DiLoCo run (same config, same tokens:
# each node reads its own partition) with each pseudo-gradient compression,
# at each number of inner steps H; a local swarm of N nodes per cell
# (intellect_train --local-nodes N). Reports the final validation loss
# (evaluated after the last outer step: the same weights on every node), its
# difference from fp32 ("none") at the same H, the bytes each node sent per
# outer step (the metrics' bytes_sent, averaged over nodes and outer steps)
# and their fraction of fp32's, and whether every node agreed at every step.
#
#   scripts/compression_quality.sh [-n NODES] [-c CONFIG] [-H "25 100"]
#       [-m "none int8 int4 sparse:0.01 sparse:0.03"] [-o OUT] [-b BUILD] [--set k=v]...
#
# A mode is COMPRESSION[:X]: X is sparse's density (diloco.sparse_density) or
# blocks4's or blocks2's share of the blocks sent per round
# (diloco.block_fraction), e.g. "blocks4:0.2" (1/35.6 of fp32's bytes in
# steady rounds), "blocks2:0.3334" (1/38.4) or "blocks2:0.25" (1/51.2).
# A mode may carry settings of its own after '+', e.g. the pre-SparseLoCo
# sparse recipe (undecayed error feedback under DiLoCo's Nesterov step):
#   sparse:0.03+diloco.error_feedback_decay=1+diloco.outer_lr=0.7+diloco.outer_momentum=0.9+diloco.nesterov=true
#
# Examples:
#   # the CPU table in docs/PERFORMANCE.md (tiny model on tinyshakespeare, byte tokens; ~6 min on 2 cores)
#   build/prepare_data --tokenizer byte --input ../shared/data/text/tinyshakespeare.txt \
#     --output data/shakespeare-byte --shard-tokens 1000000
#   scripts/compression_quality.sh -n 4 -H "25 100" -o /tmp/cq --set train.steps=400 \
#     --set model.vocab_size=258 --set model.dim=64 --set model.ffn_dim=192 --set model.head_dim=16 \
#     --set model.n_layers=2 --set model.bos_id=256 --set model.eos_id=257 --set train.seq_len=64 \
#     --set model.max_seq_len=64 --set train.batch_size=8 --set train.micro_batch_size=8 \
#     --set train.threads=1 --set optim.lr=3e-3 --set data.tokenizer=byte \
#     --set data.train=data/shakespeare-byte/shard_000000.bin --set data.val=data/shakespeare-byte/shard_000001.bin
#   # the GPU table (150m config, 4 nodes on one H200): scripts/compression_quality_gpu.sh
#
# Every cell runs in a fresh directory (OUT/H<h>-<mode>): a coordinator
# restores whatever state it finds in its out_dir, so runs must never share one.
set -euo pipefail

nodes=4
config=""
hs="25 100"
modes="none int8 int4 sparse:0.01 sparse:0.03"
out="runs/compression_quality"
build="$(cd "$(dirname "$0")/.." && pwd)/build"
sets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) nodes="$2"; shift 2 ;;
    -c) config="$2"; shift 2 ;;
    -H) hs="$2"; shift 2 ;;
    -m) modes="$2"; shift 2 ;;
    -o) out="$2"; shift 2 ;;
    -b) build="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "compression_quality: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
train="$build/intellect_train"
[[ -x "$train" ]] || { echo "compression_quality: $train not found (build first, or pass -b BUILD)" >&2; exit 2; }
cfg=()
[[ -n "$config" ]] && cfg=(--config "$config")

echo "compression_quality: $nodes nodes, config ${config:-<embedded tiny>}, H: $hs, modes: $modes, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
echo "  overrides: ${sets[*]:-none}"
results="$out/results.jsonl"
mkdir -p "$out"
: > "$results"
for h in $hs; do
  for mode in $modes; do
    # A mode is COMPRESSION[:DENSITY][+KEY=VALUE]...: the settings after each
    # '+' apply to this cell only (e.g. an older outer recipe to compare with).
    base="${mode%%+*}"
    cell_sets=()
    if [[ "$mode" == *+* ]]; then
      IFS='+' read -r -a kvs <<< "${mode#*+}"
      for kv in "${kvs[@]}"; do cell_sets+=(--set "$kv"); done
    fi
    comp="${base%%:*}"
    density=""
    [[ "$base" == *:* ]] && density="${base#*:}"
    dir="$out/H$h-$(tr -c 'A-Za-z0-9._\n-' '-' <<< "$mode")"
    rm -rf "$dir"
    mkdir -p "$dir"
    extra=(--set "diloco.inner_steps=$h" --set "diloco.compression=$comp")
    # COMPRESSION:X is sparse's density, or blocks4's / blocks2's block fraction.
    if [[ -n "$density" && ( "$comp" == blocks4 || "$comp" == blocks2 ) ]]; then
      extra+=(--set "diloco.block_fraction=$density")
    elif [[ -n "$density" ]]; then extra+=(--set "diloco.sparse_density=$density"); fi
    extra+=("${cell_sets[@]}")
    t0=$(date +%s.%N)
    set +e
    "$train" --local-nodes "$nodes" "${cfg[@]}" "${sets[@]}" --set "train.out_dir=$dir" --set ckpt.save_final=false \
      "${extra[@]}" > "$dir/swarm.log" 2>&1
    rc=$?
    set -e
    t1=$(date +%s.%N)
    python3 - "$dir" "$nodes" "$h" "$mode" "$rc" "$t0" "$t1" >> "$results" <<'PY'
import json, re, sys
d, nodes, h, mode, rc, t0, t1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
val, sent, steps = None, [], 0
for i in range(nodes):
    try:
        lines = [json.loads(l) for l in open(f"{d}/node-{i}/metrics.jsonl")]
    except OSError:
        continue
    for l in lines:
        for k in ("outer", "outer_final"):
            if k in l and l[k].get("ring_size", 1) > 1:
                sent.append(l[k]["bytes_sent"])
    vs = [l["val_loss"] for l in lines if "val_loss" in l]
    if i == 0 and vs:
        val = vs[-1]
        steps = lines[-1].get("step", 0)
log = open(f"{d}/swarm.log", errors="replace").read()
m = re.findall(r"agreed: (\d+), diverged: (\d+)", log)
print(json.dumps({"H": h, "mode": mode, "rc": rc, "val_loss": val, "steps": steps,
                  "bytes_per_node_per_outer_step": sum(sent) / len(sent) if sent else None,
                  "agreed": int(m[-1][0]) if m else None, "diverged": int(m[-1][1]) if m else None,
                  "wall_s": round(t1 - t0, 1)}))
PY
    tail -1 "$results"
  done
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = {r["H"]: r for r in rows if r["mode"] == "none"}
print(f"\n| H | compression | final val loss | vs fp32 | bytes/node/outer step | of fp32's bytes | agreed/diverged | wall (s) |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    b = base.get(r["H"])
    dv = f"{100 * (r['val_loss'] / b['val_loss'] - 1):+.2f}%" if b and b["val_loss"] and r["val_loss"] else "?"
    by = r["bytes_per_node_per_outer_step"]
    frac = f"1/{b['bytes_per_node_per_outer_step'] / by:.1f}" if b and by and b["bytes_per_node_per_outer_step"] else "?"
    vl = f"{r['val_loss']:.4f}" if r["val_loss"] else f"? (exit {r['rc']})"
    print(f"| {r['H']} | {r['mode']} | {vl} | {dv} | {by / 1e6 if by else 0:.3f} MB | {frac} | {r['agreed']}/{r['diverged']} | {r['wall_s']} |")
PY
