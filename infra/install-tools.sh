#!/usr/bin/env bash
# Installs the deploy tool chain a fresh machine lacks: cargo-lambda (which
# brings zig for cross-linking), cfn-lint, and the Rust target of the
# architecture being built. Safe to run again: present tools are kept.
#
#   infra/install-tools.sh            # cargo-lambda, cfn-lint, aarch64 target
#   BATON_ARCH=x86_64 infra/install-tools.sh
set -euo pipefail

arch="${BATON_ARCH:-arm64}"

if ! command -v cargo-lambda >/dev/null 2>&1; then
  echo "==> installing cargo-lambda"
  python3 -m pip install --quiet cargo-lambda
fi

if ! command -v cfn-lint >/dev/null 2>&1; then
  echo "==> installing cfn-lint"
  python3 -m pip install --quiet cfn-lint
fi

if [ "$arch" = "arm64" ] && command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    echo "==> adding the aarch64-unknown-linux-gnu Rust target"
    # Without it, build x86_64 and deploy with Architecture=x86_64.
    rustup target add aarch64-unknown-linux-gnu ||
      echo "warning: the arm64 target is unavailable; use BATON_ARCH=x86_64" >&2
  fi
fi
