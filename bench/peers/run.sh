#!/usr/bin/env bash
# Runs the two workloads on Restate and on DBOS, on this machine, and writes
# one JSON line per run to OUT_DIR/restate.jsonl and OUT_DIR/dbos.jsonl.
#
#   bench/peers/run.sh [OUT_DIR]
#
# EXECUTIONS (default 2000 for Restate, 300 for DBOS; DBOS_EXECUTIONS for
# DBOS alone), IN_FLIGHT (a list, default "16 64 128") and DBOS_IN_FLIGHT
# (default "1 8") tune the runs; the best in-flight setting of each system is
# the one compared. PEERS="restate" or "dbos" runs one. DBOS runs twice: at
# its defaults (rollback journal) and with the file in WAL mode.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../target/bench}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
"$here/setup.sh"

work="$(mktemp -d "${TMPDIR:-/tmp}/baton-peers.XXXXXX")"
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_servers
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fs -o /dev/null "$1"; do
    [ $SECONDS -lt $deadline ] || { echo "nothing answers at $1" >&2; return 1; }
    sleep 0.2
  done
}

# --- Restate: server + the no-op service, driven through the ingress -----
restate_runs() {
  local executions="${EXECUTIONS:-2000}" in_flight="${IN_FLIGHT:-16 64 128}"
  local rs="$here/restate"
  local service_port; service_port="$(free_port)"
  : > "$out/restate.jsonl"
  RESTATE_BIND_IP=127.0.0.1 RESTATE_DISABLE_TELEMETRY=true RESTATE_LOG_FILTER=warn \
    "$rs/node_modules/.bin/restate-server" --base-dir "$work/restate" >"$work/restate-server.log" 2>&1 &
  pids+=($!)
  wait_http http://127.0.0.1:9070/health 60
  (cd "$rs" && RESTATE_LOGGING=WARN PORT="$service_port" exec node_modules/.bin/tsx service.ts) >"$work/restate-service.log" 2>&1 &
  pids+=($!)
  local deadline=$((SECONDS + 30))
  until curl -fs -o /dev/null -X POST http://127.0.0.1:9070/deployments \
      -H 'content-type: application/json' -d "{\"uri\": \"http://127.0.0.1:$service_port\"}"; do
    [ $SECONDS -lt $deadline ] || { echo "could not register the Restate service" >&2; cat "$work/restate-service.log" >&2; return 1; }
    sleep 0.5
  done
  for handler in sequence fanOut; do
    local steps=10; [ "$handler" = fanOut ] && steps=12
    for c in $in_flight; do
      (cd "$rs" && node_modules/.bin/tsx load.ts "$handler" "$executions" "$c" "$steps") | tee -a "$out/restate.jsonl"
    done
  done
  # Nothing of Restate's may run beside the next system, nor its load linger.
  stop_servers
  sleep "${SETTLE_SECONDS:-20}"
}

# --- DBOS: a SQLite system database, default durability -------------------
dbos_runs() {
  local executions="${DBOS_EXECUTIONS:-${EXECUTIONS:-300}}" in_flight="${DBOS_IN_FLIGHT:-1 8}"
  : > "$out/dbos.jsonl"
  for journal in default wal; do
    for workload in sequence-10 fan-out-10; do
      for c in $in_flight; do
        rm -f "$work"/dbos.sqlite*
        "$here/dbos/.venv/bin/python" "$here/dbos/bench.py" "$workload" "$executions" "$c" "$work/dbos.sqlite" "$journal" \
          2>"$work/dbos.log" | tee -a "$out/dbos.jsonl"
      done
    done
  done
}

case "${PEERS:-restate dbos}" in *restate*) restate_runs ;; esac
case "${PEERS:-restate dbos}" in *dbos*) dbos_runs ;; esac
