#!/usr/bin/env bash
# Issue 15's whole join, measured: a running swarm of N nodes (a coordinator
# and N training processes), every node's links emulated as a WAN
# (mesh.emulate_link_*: the ring traffic and the state a donor serves, and
# the joiner's downlink for the state it fetches), and
# one more node that joins once the run is J outer steps in. The joiner's
# first metrics line says how it joined (`joined`: `seconds` from its
# request to holding the run's state, rounds caught up included, and
# `state_bytes`); the goal is a joiner in the ring within
# 1.2 x state bytes / link bandwidth. Also printed: the donor's time on its
# training thread for the snapshot (`snapshot_s`), and the first outer step
# the joiner averaged in a full ring.
#
#   scripts/join_wan.sh [-n NODES] [-c CONFIG] [-o OUT] [-b BUILD] [-j JOIN_AT] [-r MBIT] [-d DELAY_MS]
#                       [-p PORT] [--set k=v]...
#
# Every node gets the same --set overrides (train.steps, diloco.inner_steps,
# the data, the device...). Examples:
#   # the dev VM, no GPU (tiny model, 10 Mbit/s and 20 ms one way; about 2 minutes)
#   build/make_corpus --out /tmp/join_corpus --docs 3000 --val-docs 0
#   scripts/join_wan.sh -o /tmp/join_wan -r 10 -d 20 --set train.steps=120 --set diloco.inner_steps=10 \
#     --set train.threads=1 --set train.eval_every=0 --set "data.train=/tmp/join_corpus/train_*.bin" \
#     --set data.val= --set ckpt.save_final=false
#   # the GPU host: scripts/device/routine.sh join-wan (150m, 1 Gbit/s, 50 ms)
#
# Exit status: 0 when the joiner joined and every process ended cleanly
# (whether the goal was met is printed, not the exit status).
set -euo pipefail

nodes=2
config=""
out="runs/join_wan"
build="$(cd "$(dirname "$0")/.." && pwd)/build"
join_at=2
mbit=1000
delay=50
port=$((29000 + RANDOM % 1000))
sets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n) nodes="$2"; shift 2 ;;
    -c) config="$2"; shift 2 ;;
    -o) out="$2"; shift 2 ;;
    -b) build="$2"; shift 2 ;;
    -j) join_at="$2"; shift 2 ;;
    -r) mbit="$2"; shift 2 ;;
    -d) delay="$2"; shift 2 ;;
    -p) port="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "join_wan: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
train="$build/intellect_train"
[[ -x "$train" ]] || { echo "join_wan: $train not found (build first, or pass -b BUILD)" >&2; exit 2; }
cfg=()
[[ -n "$config" ]] && cfg=(--config "$config")

rm -rf "$out"
mkdir -p "$out"
NAME=join_wan OUT=$out TRAIN=$train PORT=$port
source "$(dirname "$0")/swarm_lib.sh"
swarm_secret
common=("${cfg[@]}" "${sets[@]}" --set diloco.enabled=true --set "mesh.secret_file=$out/secret"
        --set "mesh.coordinator=127.0.0.1:$port" --set "data.partitions=$((nodes + 1))"
        --set "mesh.emulate_link_mbit=$mbit" --set "mesh.emulate_link_delay_ms=$delay")

echo "join_wan: $nodes nodes + 1 joiner at outer step $join_at, config ${config:-<embedded tiny>}," \
     "links $mbit Mbit/s, $delay ms one way, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
swarm_start_coordinator "$nodes" "${cfg[@]}"

node() {  # name: a training process of the run, its log and metrics under $out/<name>
  mkdir -p "$out/$1"
  exec "$train" "${common[@]}" --set "mesh.name=$1" --set "train.out_dir=$out/$1" > "$out/$1/train.log" 2>&1  # exec: the pid the cleanup kills is the process
}
for ((i = 0; i < nodes; i++)); do node "node-$i" & PIDS+=($!); done
# The joiner starts once node-0 has applied outer step join_at.
t0=$(date +%s)
applied() { grep -c '"outer_step":' "$out/node-0/metrics.jsonl" 2>/dev/null || true; }
until [[ $(applied) -ge $join_at ]]; do
  if ! kill -0 "${PIDS[0]}" 2>/dev/null; then echo "join_wan: node-0 ended before outer step $join_at:"; tail "$out/node-0/train.log"; exit 1; fi
  if (( $(date +%s) - t0 > ${JOIN_WAIT_S:-1800} )); then echo "join_wan: no outer step $join_at after ${JOIN_WAIT_S:-1800} s"; exit 1; fi
  sleep 0.5
done
echo "join_wan: the run is at outer step $join_at after $(( $(date +%s) - t0 )) s; the joiner starts"
node joiner & PIDS+=($!)
# RUN_DEADLINE_S bounds the rest of the run: past it, where each process had
# got to is printed (its log's last lines) and the script fails, so a run cut
# short still says why.
swarm_wait_nodes "${RUN_DEADLINE_S:-3600}" "the joiner's start"
rc=$SWARM_RC

status=0
python3 - "$out" "$nodes" "$mbit" "$delay" <<'EOF' || status=$?
import json, sys
out, nodes, mbit, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def lines(name):
    with open(f"{out}/{name}/metrics.jsonl") as f:
        return [json.loads(l) for l in f if l.strip()]
j = lines("joiner")
joined = next((l["joined"] for l in j if "joined" in l), None)
if joined is None:
    print("join_wan: the joiner's metrics have no `joined` line (it did not join a run in progress: see its train.log)")
    sys.exit(1)
seconds, state = joined["seconds"], joined["state_bytes"]
link_s = state * 8 / (mbit * 1e6)
goal = 1.2 * link_s
print(f"joiner: joined at outer step {joined['outer_step']} (first step {joined['first_step']}), "
      f"{state / 1e6:.1f} MB of state in {seconds:.2f} s, {joined['rounds_caught_up']} round(s) caught up "
      f"({joined['round_bytes'] / 1e6:.1f} MB), {joined['bad_chunks_refetched']} chunk(s) fetched again, "
      f"{joined.get('chunks_from_further_donors', 0)} of {joined.get('chunks', '?')} chunks from further donors")
print(f"link {mbit:g} Mbit/s, {delay} ms one way: state bytes / link = {link_s:.2f} s; goal 1.2 x = {goal:.2f} s; "
      f"joined in {seconds:.2f} s = {seconds / link_s:.2f} x -> {'MET' if seconds <= goal else 'NOT MET'}")
first_full = next((l["outer"]["outer_step"] for l in j if "outer" in l and not l["outer"]["late"]
                   and l["outer"]["ring_size"] == nodes + 1), None)
print(f"joiner: first outer step averaged in the full ring of {nodes + 1}: {first_full}")
for i in range(nodes):
    snaps = [l["snapshot_s"] for l in lines(f"node-{i}") if "snapshot_s" in l]
    if snaps:
        print(f"donor node-{i}: snapshot(s) for the joiner held its training thread {', '.join(f'{s:.3f}' for s in snaps)} s")
EOF
tail -1 "$out/coordinator.log"
[[ $rc -eq 0 && $status -eq 0 ]] || { echo "join_wan: a process failed (exit $rc): see $out/*/train.log"; exit 1; }
