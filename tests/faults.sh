#!/usr/bin/env bash
# The fault-injection tier at a larger size than CI's, on both backends, and
# its summary: executions run, faults injected per class, anomalies found.
#
#   tests/faults.sh                 # 2000 executions on each backend
#   tests/faults.sh embedded        # one backend only (aws | embedded)
#   BATON_FAULT_EXECUTIONS=500 BATON_FAULT_SEED=0x51 tests/faults.sh aws
#
# Knobs (environment): BATON_FAULT_EXECUTIONS (default 2000 here, 200 on AWS
# and 300 embedded in CI), BATON_FAULT_SEED (the first seed; each run of
# BATON_FAULT_PER_SEED executions takes the next), BATON_FAULT_RATE (the
# fraction of each operation's calls that fail, default 0.05),
# BATON_FAULT_PARALLEL (seed runs at once), BATON_FAULT_SERVERS (moto
# servers the AWS tier spreads its runs over, default 2), BATON_FAULT_DEBUG=1
# (print the history and faults of any execution with an anomaly).
#
# The AWS tier needs moto server (`pip install 'moto[server]'`); it starts it
# unless BATON_TEST_AWS_ENDPOINT names one. On two cores it runs about 100
# executions a minute; the embedded tier about 1500.
set -euo pipefail
cd "$(dirname "$0")/.."

which="${1:-all}"
export BATON_FAULT_EXECUTIONS="${BATON_FAULT_EXECUTIONS:-2000}"
export BATON_FAULT_RATE="${BATON_FAULT_RATE:-0.05}"
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

run() {
  local crate=$1 name=$2
  shift 2
  echo "==> $name: $BATON_FAULT_EXECUTIONS executions (seed ${BATON_FAULT_SEED:-default}, rate $BATON_FAULT_RATE)"
  local status=0
  cargo test -q -p "$crate" --test faults "$@" -- --nocapture --test-threads=1 >"$log/$name" 2>&1 || status=$?
  grep -E '^fault tier .*(summary|executions over)' "$log/$name" || true
  if [ "$status" -ne 0 ]; then
    grep -E '^seed .*: ' "$log/$name" | grep -v ' requests to moto\| started ' | tail -n 40 || true
    sed -n '/anomalies:$/,/^stack backtrace/p' "$log/$name" | head -n 60
    kept="${TMPDIR:-/tmp}/baton-faults-$name.log"
    cp "$log/$name" "$kept"
    echo "==> $name FAILED (full log kept in $kept)"
  fi
  return "$status"
}

failed=0
if [ "$which" = all ] || [ "$which" = embedded ]; then
  run baton-embedded embedded || failed=1
fi
if [ "$which" = all ] || [ "$which" = aws ]; then
  run baton-aws aws nothing_accepted || failed=1
fi
exit "$failed"
