#!/usr/bin/env bash
# Runs every benchmark and prints the figures BENCHMARKS.md reports:
#
#   bench/run.sh            # everything (about 90 minutes on 2 cores, the cost sweep most of it)
#   bench/run.sh engine     # one part: machine | engine | embedded | map | timers | peers | compare | cost
#   bench/run.sh fanout     # (not in "everything") Restate, then Baton's embedded sequence and
#                           # fan-out at 8, 64 and 256 in flight, then one table with the ratios
#
# `fanout` takes EXECUTIONS (Baton's, default 2000), FANOUT_IN_FLIGHT (default
# 8,64,256), RESTATE_EXECUTIONS (default 2000) and RESTATE_IN_FLIGHT (default
# "8 16 64 128 256"); it writes target/bench/fanout/{embedded.json,restate.jsonl}.
#
# Results also go to target/bench/*.json. Nothing here fails on a timing;
# run on a quiet machine (no build running) or the figures are distorted:
# each part prints the load average it ran under.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/target/bench"
mkdir -p "$out"
bench="$root/target/release/baton-bench"

build() {
  cargo build --release -p baton-bench -p baton-cli --quiet
}

part_machine() { "$bench" machine --dir "$out" --json "$out/machine.json"; }

part_engine() {
  # criterion's own report, plus transitions per second per workload.
  cargo bench -p baton-core --bench transition -- --noplot 2>&1 | grep -E "transitions/s|time:" || true
}

part_embedded() { "$bench" embedded --dir "$out" --json "$out/embedded.json" ${EMBEDDED_ARGS:-}; }

part_map() {
  # `baton run` of a for_each over N no-op elements on a fresh database,
  # start to end: wall time and the process's peak memory.
  local dir
  dir=$(mktemp -d)
  for n in 1000 4000 10000; do
    python3 -c "import json; print(json.dumps({'items': list(range($n))}))" >"$dir/input.json"
    rm -rf "$dir/.baton"
    if [ -x /usr/bin/time ]; then
      (cd "$dir" && /usr/bin/time -f "for_each of $n elements: %e s, peak RSS %M KB" \
        "$root/target/release/baton" run "$root/bench/workflows/big-map.yaml" --input @input.json >/dev/null)
    else
      # Without GNU time (Debian package `time`): wall time only.
      local began=$EPOCHREALTIME
      (cd "$dir" && "$root/target/release/baton" run "$root/bench/workflows/big-map.yaml" --input @input.json >/dev/null)
      echo "for_each of $n elements: $(python3 -c "print(round($EPOCHREALTIME - $began, 2))") s"
    fi
  done
  rm -rf "$dir"
}

part_timers() { "$bench" timers --dir "$out" --json "$out/timers.json"; }

part_peers() { "$root/bench/peers/run.sh" "$out"; }

part_compare() {
  "$bench" compare --baton "$out/embedded.json" --peer "$out/restate.jsonl" --peer "$out/dbos.jsonl"
}

part_fanout() {
  # Restate first: its script stops the server and lets the load settle
  # before Baton runs. Conflicts per execution are read from the store.
  local dir="$out/fanout"
  mkdir -p "$dir"
  PEERS=restate EXECUTIONS="${RESTATE_EXECUTIONS:-2000}" IN_FLIGHT="${RESTATE_IN_FLIGHT:-8 16 64 128 256}" \
    "$root/bench/peers/run.sh" "$dir"
  echo "-- baton embedded (load average $(cut -d' ' -f1 /proc/loadavg))"
  "$bench" embedded --dir "$out" --json "$dir/embedded.json" --executions "${EXECUTIONS:-2000}" \
    --in-flight "${FANOUT_IN_FLIGHT:-8,64,256}" --unloaded-executions 0
  "$bench" compare --baton "$dir/embedded.json" --peer "$dir/restate.jsonl"
}

part_cost() {
  "$bench" cost --json "$out/cost.json" ${COST_ARGS:-}
  # The same workloads publishing every step's lifecycle events too
  # (BATON_EVENTS=all, opt-in).
  "$bench" cost --events all --memory-executions 0 --json "$out/cost-all-events.json" ${COST_ARGS:-}
  # By output size: 0.1, 1, 4 and 32 KiB, and 1 MiB (kept in S3 by reference).
  for bytes in 100 1024 4096 32768 1048576; do
    "$bench" cost --workloads sequence-10 --output-bytes "$bytes" --memory-executions 0 \
      --json "$out/cost-output-$bytes.json" ${COST_ARGS:-}
  done
  # A for_each of 10,000 elements, once (about an hour on moto).
  "$bench" cost --workloads map-10000 --executions 1 --memory-executions 0 \
    --json "$out/cost-map-10000.json"
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(machine engine embedded map timers peers compare cost)
build
for part in "${parts[@]}"; do
  echo "== $part (load average $(cut -d' ' -f1 /proc/loadavg))"
  "part_$part"
done
