#!/usr/bin/env bash
# Installs the AWS SAM CLI into its own virtual environment (.venv-sam at the
# repository root) and prints the path of its `sam`. SAM pins its own
# cfn-lint, so it must not share an environment with the machine's.
# Kept if already there; SAM_VENV overrides the location.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SAM_VENV:-$PWD/.venv-sam}"
if [ ! -x "$venv/bin/sam" ]; then
  echo "==> installing aws-sam-cli into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet aws-sam-cli >&2
fi
echo "$venv/bin/sam"
