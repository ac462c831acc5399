#!/usr/bin/env bash
# Installs the peers measured beside Baton into bench/peers/ (nothing of
# theirs is committed): Restate's server and TypeScript SDK with npm, DBOS in
# a Python virtual environment. Safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

command -v node >/dev/null || { echo "needs Node.js 20 or later (node)" >&2; exit 1; }
command -v npm >/dev/null || { echo "needs npm" >&2; exit 1; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }

# PEERS="restate" or "dbos" installs one (as bench/peers/run.sh runs one).
peers="${PEERS:-restate dbos}"

if [[ $peers == *restate* ]] && { [ ! -x "$here/restate/node_modules/.bin/restate-server" ] || [ ! -x "$here/restate/node_modules/.bin/tsx" ]; }; then
  echo "installing Restate (npm) into bench/peers/restate/node_modules" >&2
  (cd "$here/restate" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [[ $peers == *dbos* ]] && { [ ! -x "$here/dbos/.venv/bin/python" ] || ! "$here/dbos/.venv/bin/python" -c 'import dbos' 2>/dev/null; }; then
  echo "installing DBOS (pip) into bench/peers/dbos/.venv" >&2
  python3 -m venv "$here/dbos/.venv"
  "$here/dbos/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/dbos/requirements.txt"
fi
