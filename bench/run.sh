#!/usr/bin/env bash
# Runs every benchmark and prints the figures BENCHMARKS.md reports:
#
#   bench/run.sh            # everything (about 20 minutes on 2 cores)
#   bench/run.sh engine     # one part: machine | engine | embedded | timers | peers | compare | cost
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
  cargo build --release -p baton-bench --quiet
}

part_machine() { "$bench" machine --dir "$out" --json "$out/machine.json"; }

part_engine() {
  # criterion's own report, plus transitions per second per workload.
  cargo bench -p baton-core --bench transition -- --noplot 2>&1 | grep -E "transitions/s|time:" || true
}

part_embedded() { "$bench" embedded --dir "$out" --json "$out/embedded.json" ${EMBEDDED_ARGS:-}; }

part_timers() { "$bench" timers --dir "$out" --json "$out/timers.json"; }

part_peers() { "$root/bench/peers/run.sh" "$out"; }

part_compare() {
  "$bench" compare --baton "$out/embedded.json" --peer "$out/restate.jsonl" --peer "$out/dbos.jsonl"
}

part_cost() {
  "$bench" cost --json "$out/cost.json" ${COST_ARGS:-}
  # The same workloads publishing every step's lifecycle events too
  # (BATON_EVENTS=all, opt-in).
  "$bench" cost --events all --memory-executions 0 --json "$out/cost-all-events.json" ${COST_ARGS:-}
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(machine engine embedded timers peers compare cost)
build
for part in "${parts[@]}"; do
  echo "== $part (load average $(cut -d' ' -f1 /proc/loadavg))"
  "part_$part"
done
