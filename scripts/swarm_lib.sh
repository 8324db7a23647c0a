# Sourced by the scripts that run a swarm of separate processes on one
# machine (join_wan.sh, hetero_swarm.sh): a coordinator and training
# processes under one directory, started, waited for with a deadline, and
# stopped. The caller sets NAME (its name in messages), OUT (the run's
# directory), TRAIN (the intellect_train binary) and PORT; it keeps the node
# processes' pids in the array PIDS and the coordinator's in COORDINATOR.
# Not a script of its own: `source "$(dirname "$0")/swarm_lib.sh"`.

PIDS=()
COORDINATOR=""

# A shared secret for the run under $OUT (mode 600: the nodes refuse a
# readable one).
swarm_secret() {
  head -c 32 /dev/urandom > "$OUT/secret"
  chmod 600 "$OUT/secret"
}

# Nodes first (SIGTERM: each saves and stops), the coordinator after them: a
# node whose coordinator is gone retries it for mesh.round_timeout_ms and
# does not see a SIGTERM meanwhile (noted in docs/RELIABILITY.md), so what
# is left after 10 s is killed. Installed as the EXIT trap by swarm_start_coordinator.
swarm_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 20); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.5
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [[ -n "$COORDINATOR" ]] && kill "$COORDINATOR" 2>/dev/null || true
}

# swarm_start_coordinator MIN_RING [ARGS...]: a coordinator listening on
# 127.0.0.1:$PORT with the run's secret, its log in $OUT/coordinator.log;
# returns once it listens, or ends the script with its log's last lines.
swarm_start_coordinator() {
  local min_ring=$1
  shift
  trap swarm_cleanup EXIT
  "$TRAIN" --coordinator "$@" --set "mesh.secret_file=$OUT/secret" --set "mesh.listen=127.0.0.1:$PORT" \
    --set "mesh.min_ring=$min_ring" --set "train.out_dir=$OUT/coordinator" > "$OUT/coordinator.log" 2>&1 &
  COORDINATOR=$!
  for _ in $(seq 100); do grep -q "coordinator listening" "$OUT/coordinator.log" 2>/dev/null && return 0; sleep 0.1; done
  echo "$NAME: the coordinator did not start:"
  tail "$OUT/coordinator.log"
  exit 1
}

# swarm_wait_nodes DEADLINE_S WHAT: waits for every process in PIDS. Past
# DEADLINE_S seconds from now, prints where each process had got to (its
# log's last lines) and ends the script, so a run cut short still says why.
# Sets SWARM_RC to the first nonzero exit status (0 when all ended cleanly),
# then stops the coordinator.
swarm_wait_nodes() {
  local deadline=$(( $(date +%s) + $1 )) what=$2
  SWARM_RC=0
  for p in "${PIDS[@]}"; do
    while kill -0 "$p" 2>/dev/null; do
      if (( $(date +%s) > deadline )); then
        echo "$NAME: the run did not end within $1 s of $what; the processes' last lines:"
        for d in "$OUT"/*/; do
          [[ -f "$d/train.log" ]] || continue
          echo "--- $(basename "$d")"; tail -n 8 "$d/train.log"
        done
        echo "--- coordinator"; tail -n 8 "$OUT/coordinator.log"
        exit 1
      fi
      sleep 1
    done
    local rc=0
    wait "$p" || rc=$?
    (( SWARM_RC == 0 )) && SWARM_RC=$rc
  done
  PIDS=()
  kill -INT "$COORDINATOR" 2>/dev/null || true
  wait "$COORDINATOR" 2>/dev/null || true
  COORDINATOR=""
}
