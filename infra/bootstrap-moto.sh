#!/usr/bin/env bash
# Runs moto server on 127.0.0.1 (one request at a time, as DynamoDB's
# conditional writes need) and creates Baton's resources on it with
# `baton bootstrap`. The settings land in .baton/aws.env.
#
#   infra/bootstrap-moto.sh [PORT]   (default 5000)
#   source .baton/aws.env && baton dev --endpoint "$AWS_ENDPOINT_URL" workflows/order-saga.yaml
#
# moto keeps everything in memory: stop it (kill the PID printed) to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${1:-5000}"
endpoint="http://127.0.0.1:$port"

if ! curl -fs "$endpoint/moto-api/" >/dev/null 2>&1; then
  if ! python3 -c 'import moto, werkzeug' 2>/dev/null; then
    echo "==> installing moto server"
    python3 -m pip install --quiet 'moto[server]'
  fi
  mkdir -p .baton
  python3 tests/moto-server.py "$port" >.baton/moto.log 2>&1 &
  echo "==> moto server on $endpoint (pid $!, log .baton/moto.log)"
  for _ in $(seq 1 100); do
    curl -fs "$endpoint/moto-api/" >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

# Dummy credentials: moto accepts any.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
# The installed `baton` if there is one, else the workspace's.
if command -v baton >/dev/null 2>&1; then
  baton bootstrap --endpoint "$endpoint"
else
  cargo run --quiet -p baton-cli -- bootstrap --endpoint "$endpoint"
fi
