#!/usr/bin/env bash
# Runs every check the project has: formatting, lints, the deployment template,
# all tests and the Lambda build of every function.
# Needs only the Rust toolchain, Python and pip (and the machine's Node.js, for
# the example app's Node step): it installs and starts what the tests need
# (moto server for the AWS backend's API-level tests, MiniStack for the tests
# where real Lambda function code runs) and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean clone gains nothing from incremental state, which costs gigabytes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

# The deployment template: the machine's cfn-lint (stricter than SAM's
# bundled one) must report nothing, and SAM must accept it.
echo "==> cfn-lint template.yaml"
if ! command -v cfn-lint >/dev/null 2>&1; then
  python3 -m pip install --quiet cfn-lint
fi
cfn-lint template.yaml
echo "==> sam validate --lint"
sam=$(infra/install-sam.sh)
SAM_CLI_TELEMETRY=0 "$sam" validate --lint -t template.yaml --region us-east-1

# moto server stands in for DynamoDB, SQS, EventBridge and Scheduler.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "==> installing moto server"
  python3 -m pip install --quiet 'moto[server]'
fi
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
port=$(free_port)
moto_log=$(mktemp)
python3 tests/moto-server.py "$port" >"$moto_log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true; rm -f "$moto_log"' EXIT
for _ in $(seq 1 100); do
  if curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
export BATON_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
echo "==> moto server on $BATON_TEST_AWS_ENDPOINT"

# MiniStack runs real Python, Node.js and provided.al2023 function code as
# local processes; tests/ministack-server.py fills the gaps Baton relies on.
if ! python3 -c 'import ministack' 2>/dev/null; then
  echo "==> installing MiniStack"
  python3 -m pip install --quiet ministack
fi
ministack_port=$(free_port)
ministack_log=$(mktemp)
python3 tests/ministack-server.py "$ministack_port" >"$ministack_log" 2>&1 &
ministack_pid=$!
trap 'kill $moto_pid $ministack_pid 2>/dev/null || true; rm -f "$moto_log" "$ministack_log"' EXIT
for _ in $(seq 1 300); do
  if curl -fs "http://127.0.0.1:$ministack_port/_ministack/health" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
export BATON_TEST_MINISTACK_ENDPOINT="http://127.0.0.1:$ministack_port"
echo "==> MiniStack on $BATON_TEST_MINISTACK_ENDPOINT"

# Chromium and chromedriver for the console's browser test (cli/tests/ui_browser.rs),
# which fails without them unless BATON_SKIP_BROWSER=1.
if [ "${BATON_SKIP_BROWSER:-0}" != 1 ]; then
  echo "==> browser for the console test"
  tests/browser/install.sh
fi

echo "==> cargo test"
cargo test --workspace --all-features -- --test-threads="${BATON_TEST_THREADS:-4}"

# `sam build` of every function the template deploys (cargo-lambda, release,
# the template's architecture), with a bootstrap each: about 20 minutes cold
# on 2 cores, seconds when nothing changed. BATON_SKIP_LAMBDA_BUILD=1 skips it
# on a developer machine; CI keeps it. infra/build-functions.sh builds the
# same binaries with one `cargo lambda build`.
if [ "${BATON_SKIP_LAMBDA_BUILD:-0}" = 1 ]; then
  echo "==> sam build skipped (BATON_SKIP_LAMBDA_BUILD=1)"
else
  echo "==> sam build (every function of template.yaml)"
  infra/sam-build.sh
fi
echo "==> all checks passed"
