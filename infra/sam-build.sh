#!/usr/bin/env bash
# `sam build` of template.yaml, then a check that every function has its
# bootstrap, built for the right CPU. SAM runs `cargo lambda build --release
# --bin <Binary>` in each function's CodeUri, one function after another,
# sharing the workspace's target directory, and copies each bootstrap to
# <build dir>/<Function>/bootstrap; `sam deploy --guided` uploads them.
# The template holds Baton's own functions only (the API and the
# coordinator): step functions are built and deployed by their own stacks.
# tests/run-all.sh runs this (cold, about 20 minutes on 2 cores; warm, 10 s).
#
#   infra/sam-build.sh                    # arm64
#   BATON_ARCH=x86_64 infra/sam-build.sh  # then deploy with Architecture=x86_64
#   SAM_BUILD_DIR=/tmp/build infra/sam-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."

arch="${BATON_ARCH:-arm64}"
BATON_ARCH="$arch" infra/install-tools.sh
# Unasked-for arm64 falls back to x86_64 where the aarch64 target cannot be
# installed; the template's Architecture parameter then has to say x86_64.
if [ -z "${BATON_ARCH:-}" ] && command -v rustup >/dev/null 2>&1 &&
  ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  echo "warning: no aarch64 Rust target; building x86_64 (deploy with Architecture=x86_64)" >&2
  arch=x86_64
fi
case "$arch" in
  arm64) machine=183 ;;   # ELF e_machine EM_AARCH64
  x86_64) machine=62 ;;   # EM_X86_64
  *) echo "error: BATON_ARCH must be arm64 or x86_64, not $arch" >&2; exit 2 ;;
esac
build_dir="${SAM_BUILD_DIR:-.aws-sam/build}"
sam=$(infra/install-sam.sh)
export SAM_CLI_TELEMETRY=0

start=$(date +%s)
"$sam" build --template-file template.yaml --build-dir "$build_dir" \
  --parameter-overrides "Architecture=$arch" "$@"
echo "sam build took $(($(date +%s) - start)) s"

missing=0
functions=$(awk '/^  [A-Za-z0-9]+:$/ { id = $1 } /Type: AWS::Serverless::Function/ { sub(":", "", id); print id }' template.yaml)
if [ -z "$functions" ]; then
  echo "error: found no AWS::Serverless::Function in template.yaml" >&2
  exit 1
fi
for function in $functions; do
  file="$build_dir/$function/bootstrap"
  if [ ! -x "$file" ]; then
    echo "error: $file is missing" >&2
    missing=1
    continue
  fi
  got=$(python3 -c 'import sys; h=open(sys.argv[1],"rb").read(20); print(int.from_bytes(h[18:20],"little") if h[:4]==b"\x7fELF" else -1)' "$file")
  if [ "$got" != "$machine" ]; then
    echo "error: $file is not an $arch executable (ELF machine $got)" >&2
    missing=1
  fi
done
[ "$missing" = 0 ] || exit 1
echo "a bootstrap for each of the $(echo "$functions" | wc -w) functions in $build_dir ($arch)"
