#!/usr/bin/env bash
# Creates Baton's resources on a running LocalStack with `baton bootstrap`.
# Start LocalStack yourself first (it needs Docker, and its current image an
# auth token), e.g. `localstack start -d`. The settings land in .baton/aws.env.
#
#   infra/bootstrap-localstack.sh [ENDPOINT]   (default http://localhost:4566)
#   source .baton/aws.env && baton dev --endpoint "$AWS_ENDPOINT_URL" workflows/order-saga.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

endpoint="${1:-${AWS_ENDPOINT_URL:-http://localhost:4566}}"

if ! curl -fs "$endpoint/_localstack/health" >/dev/null 2>&1; then
  echo "error: no LocalStack answers on $endpoint (start it, or pass its URL)" >&2
  exit 1
fi

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
# The installed `baton` if there is one, else the workspace's.
if command -v baton >/dev/null 2>&1; then
  baton bootstrap --endpoint "$endpoint"
else
  cargo run --quiet -p baton-cli -- bootstrap --endpoint "$endpoint"
fi
