#!/usr/bin/env bash
# `sam build` of template.yaml: SAM runs `cargo lambda build --release --bin
# <Binary>` for each function (one after another, sharing the workspace's
# target directory) and copies each bootstrap to .aws-sam/build/<Function>/.
# Then `sam deploy --guided` uploads them. CI builds with
# infra/build-functions.sh instead (see README.md, Deploy).
#
#   infra/sam-build.sh                    # arm64
#   BATON_ARCH=x86_64 infra/sam-build.sh  # also deploy with Architecture=x86_64
set -euo pipefail
cd "$(dirname "$0")/.."

arch="${BATON_ARCH:-arm64}"
BATON_ARCH="$arch" infra/install-tools.sh
sam=$(infra/install-sam.sh)
export SAM_CLI_TELEMETRY=0

start=$(date +%s)
"$sam" build --template-file template.yaml --parameter-overrides "Architecture=$arch" "$@"
echo "sam build took $(($(date +%s) - start)) s"

missing=0
for function in $(awk '/^  [A-Za-z0-9]+:$/ { id = $1 } /Type: AWS::Serverless::Function/ { sub(":", "", id); print id }' template.yaml); do
  if [ ! -x ".aws-sam/build/$function/bootstrap" ]; then
    echo "error: .aws-sam/build/$function/bootstrap is missing" >&2
    missing=1
  fi
done
[ "$missing" = 0 ] || exit 1
echo "a bootstrap for every function in .aws-sam/build"
