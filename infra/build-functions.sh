#!/usr/bin/env bash
# Builds every function template.yaml deploys with one `cargo lambda build
# --release` and checks that each has its bootstrap, built for the right CPU:
# the same binaries `sam build` makes (infra/sam-build.sh, which CI runs), for
# deploying without SAM or checking the build alone. Cold, it takes as long
# as `sam build` (about 20 minutes on 2 cores). The template holds Baton's own
# functions only (the API and the coordinator): step functions are built and
# deployed by their own stacks.
#
#   infra/build-functions.sh                    # arm64 (the template's default)
#   BATON_ARCH=x86_64 infra/build-functions.sh  # where the aarch64 target is unavailable
#
# Bootstraps land in target/lambda/<binary>/bootstrap (under CARGO_TARGET_DIR if set).
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
  arm64) arch_flag=--arm64 machine=183 ;;   # ELF e_machine EM_AARCH64
  x86_64) arch_flag=--x86-64 machine=62 ;;  # EM_X86_64
  *) echo "error: BATON_ARCH must be arm64 or x86_64, not $arch" >&2; exit 2 ;;
esac

# The packages (CodeUri) and binaries (BuildProperties.Binary) of the template.
packages=()
for dir in $(sed -n 's/^ *CodeUri: *//p' template.yaml | sort -u); do
  packages+=(-p "$(awk -F'"' '/^name *=/ { print $2; exit }' "$dir/Cargo.toml")")
done
binaries=$(sed -n 's/^ *Binary: *//p' template.yaml | sort -u)
# Without a package, cargo lambda would build the whole workspace.
if [ "${#packages[@]}" = 0 ] || [ -z "$binaries" ]; then
  echo "error: found no CodeUri or Binary in template.yaml" >&2
  exit 1
fi

start=$(date +%s)
cargo lambda build --release "$arch_flag" "${packages[@]}"
echo "built in $(($(date +%s) - start)) s"

target_dir="${CARGO_TARGET_DIR:-target}"
missing=0
for binary in $binaries; do
  file="$target_dir/lambda/$binary/bootstrap"
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
echo "a bootstrap for each of the $(echo "$binaries" | wc -w) functions ($arch)"
