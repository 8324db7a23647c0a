#!/usr/bin/env bash
# Issue 19's mixed swarm: DiLoCo between nodes with different GPU counts on
# one host (an 8-GPU machine: a 4-GPU node, a 1-GPU node and a 2-GPU node,
# say), each node sharding its model FSDP-style over its own GPUs
# (train.gpus) and seeing only them (CUDA_VISIBLE_DEVICES, consecutive
# ranges), every node's links emulated as a WAN. Then, per outer step,
# whether every node's outer parameters agreed (the coordinator's hash
# check), and each node's compute utilization (1 - the time outer steps held
# its training thread / its wall time).
#
#   scripts/hetero_swarm.sh -g "4 1 2" [-c CONFIG] [-o OUT] [-b BUILD] [-a ACCUM] [-r MBIT] [-d DELAY_MS]
#                           [-p PORT] [--set k=v]...
#
#   -g  GPUs per node; 0 runs that node on the CPU backend (the dry run of
#       this script on a machine without GPUs: -g "0 0 0")
#   -a  micro-batches per GPU per inner step (default 1): a node of K GPUs
#       takes train.batch_size = K x micro_batch_size x ACCUM, so every GPU
#       does the same work per inner step and no node waits for another
#       (DiLoCo averages the nodes' pseudo-gradients equally; a larger node
#       contributes more tokens to its own)
#   -r, -d  the emulated link (mesh.emulate_link_mbit, _delay_ms); -r 0: none
#
# Every node gets the same --set overrides (diloco.rings, diloco.overlap,
# train.steps, the data...). Examples:
#   # the dev VM, no GPU: three CPU nodes of the tiny model, 100 Mbit/s, 20 ms (about a minute)
#   build/make_corpus --out /tmp/hetero_corpus --docs 2000 --val-docs 0
#   scripts/hetero_swarm.sh -g "0 0 0" -o /tmp/hetero -r 100 -d 20 --set train.steps=40 \
#     --set diloco.inner_steps=10 --set diloco.rings=2 --set diloco.overlap=eager --set train.threads=1 \
#     --set train.eval_every=0 --set "data.train=/tmp/hetero_corpus/train_*.bin" --set data.val= \
#     --set ckpt.save_final=false
#   # an 8-GPU host (issue 19): 4 + 1 + 2 GPUs, 10b.json's shapes cut to 4 layers, 8 rings, eager overlap
#   scripts/hetero_swarm.sh -g "4 1 2" -c configs/10b.json -r 1000 -d 50 --set model.n_layers=4 \
#     --set diloco.overlap=eager --set train.steps=300 --set diloco.inner_steps=50 ...
#
# Exit status: 0 when every process ended cleanly and every outer step the
# coordinator checked agreed.
set -euo pipefail

gpus="4 1 2"
config=""
out="runs/hetero_swarm"
build="$(cd "$(dirname "$0")/.." && pwd)/build"
accum=1
mbit=1000
delay=50
port=$((30000 + RANDOM % 1000))
sets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -g) gpus="$2"; shift 2 ;;
    -c) config="$2"; shift 2 ;;
    -o) out="$2"; shift 2 ;;
    -b) build="$2"; shift 2 ;;
    -a) accum="$2"; shift 2 ;;
    -r) mbit="$2"; shift 2 ;;
    -d) delay="$2"; shift 2 ;;
    -p) port="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "hetero_swarm: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
read -r -a per_node <<<"$gpus"
nodes=${#per_node[@]}
(( nodes >= 2 )) || { echo "hetero_swarm: -g names ${nodes} node(s); a swarm needs two or more" >&2; exit 2; }
total=0
for k in "${per_node[@]}"; do
  [[ "$k" =~ ^[0-9]+$ ]] || { echo "hetero_swarm: -g \"$gpus\": '$k' is not a GPU count" >&2; exit 2; }
  total=$((total + k))
done
[[ "$accum" =~ ^[1-9][0-9]*$ ]] || { echo "hetero_swarm: -a $accum is not a positive count" >&2; exit 2; }
if (( total > 0 )); then
  visible=$( (nvidia-smi -L 2>/dev/null || true) | wc -l)
  (( visible >= total )) || { echo "hetero_swarm: -g \"$gpus\" takes $total GPUs; this machine shows $visible" >&2; exit 2; }
fi
train="$build/intellect_train"
[[ -x "$train" ]] || { echo "hetero_swarm: $train not found (build first, or pass -b BUILD)" >&2; exit 2; }
cfg=()
[[ -n "$config" ]] && cfg=(--config "$config")
# The config's micro-batch size, for each node's batch (the last --set wins, as in the trainer).
micro=$("$train" "${cfg[@]}" "${sets[@]}" --print-config 2>/dev/null \
  | python3 -c "import json,sys; print(json.load(sys.stdin)['train']['micro_batch_size'])") \
  || { echo "hetero_swarm: could not read the config (intellect_train --print-config failed)" >&2; exit 2; }

rm -rf "$out"
mkdir -p "$out"
NAME=hetero_swarm OUT=$out TRAIN=$train PORT=$port
source "$(dirname "$0")/swarm_lib.sh"
swarm_secret
link=()
(( mbit > 0 )) && link=(--set "mesh.emulate_link_mbit=$mbit" --set "mesh.emulate_link_delay_ms=$delay")
common=("${cfg[@]}" "${sets[@]}" --set diloco.enabled=true --set "mesh.secret_file=$out/secret"
        --set "mesh.coordinator=127.0.0.1:$port" --set "data.partitions=$nodes" "${link[@]}")

echo "hetero_swarm: nodes of ${gpus} GPU(s), config ${config:-<embedded tiny>}, ${accum} micro-batch(es) of" \
     "$micro per GPU per inner step, links $( (( mbit > 0 )) && echo "$mbit Mbit/s, $delay ms one way" || echo "not emulated")," \
     "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
swarm_start_coordinator "$nodes" "${cfg[@]}"

first=0
for ((i = 0; i < nodes; i++)); do
  k=${per_node[$i]}
  mkdir -p "$out/node-$i"
  if (( k == 0 )); then
    env_vars=(CUDA_VISIBLE_DEVICES=)
    node_sets=(--set train.device=cpu --set "train.batch_size=$((micro * accum))")
    where="CPU"
  else
    devices=$(seq -s, "$first" $((first + k - 1)))
    first=$((first + k))
    env_vars=("CUDA_VISIBLE_DEVICES=$devices")
    node_sets=(--set train.device=cuda --set "train.gpus=$k" --set "train.batch_size=$((k * micro * accum))")
    where="GPU(s) $devices"
  fi
  echo "hetero_swarm: node-$i on $where, train.batch_size $(( (k > 0 ? k : 1) * micro * accum ))"
  env "${env_vars[@]}" "$train" "${common[@]}" "${node_sets[@]}" --set "data.partition=$i" \
    --set "mesh.name=node-$i" --set "train.out_dir=$out/node-$i" > "$out/node-$i/train.log" 2>&1 &
  PIDS+=($!)
done
swarm_wait_nodes "${RUN_DEADLINE_S:-3600}" "its start"
rc=$SWARM_RC

status=0
python3 - "$out" "$gpus" <<'EOF' || status=$?
import json, re, sys
out, gpus = sys.argv[1], sys.argv[2].split()
log = open(f"{out}/coordinator.log").read()
agreed = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"outer step (\d+): all (\d+) nodes agree", log)}
diverged = sorted(int(m.group(1)) for m in re.finditer(r"OUTER PARAMETERS DIVERGED at outer step (\d+)", log))
steps = sorted(set(agreed) | set(diverged))
print(f"outer steps checked: {len(steps)}; agreed: {len(agreed)}; diverged: {len(diverged)}")
for s in steps:
    print(f"  outer step {s}: " + (f"all {agreed[s]} nodes agree" if s in agreed else "DIVERGED"))
for i, k in enumerate(gpus):
    where = "CPU" if k == "0" else f"{k} GPU(s)"
    tl = open(f"{out}/node-{i}/train.log").read()
    u = re.findall(r"compute utilization ([0-9.]+)%", tl)
    su = re.findall(r"steady-state utilization ([0-9.]+)%", tl)
    lines = [json.loads(l) for l in open(f"{out}/node-{i}/metrics.jsonl") if l.strip()]
    outer = [l[k] for l in lines for k in ("outer", "outer_final") if k in l]  # each applied outer step
    tok = [l["tokens_per_s"] for l in lines if l.get("tokens_per_s")]
    rings = sorted({o.get("ring_size") for o in outer if o.get("ring_size")})
    print(f"node-{i} ({where}): compute utilization {u[-1] if u else '?'}%"
          + (f", steady state {su[-1]}%" if su else "")
          + (f"; median {sorted(tok)[len(tok) // 2]:.0f} tokens/s" if tok else "")
          + f"; {len(outer)} outer steps applied, ring sizes {rings}")
sys.exit(1 if diverged or not steps else 0)
EOF
tail -1 "$out/coordinator.log"
[[ $rc -eq 0 && $status -eq 0 ]] || { echo "hetero_swarm: a process failed or the nodes did not agree (exit $rc): see $out/*/train.log"; exit 1; }
