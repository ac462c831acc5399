#!/usr/bin/env bash
# Installs what the console's browser test drives: Debian's headless Chromium
# and its chromedriver (/usr/bin/chromium, /usr/bin/chromedriver), when they
# are missing. Fails if they cannot be installed, so CI cannot pass without
# running the browser test.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tests/browser/install.sh: no apt-get; install Chromium and chromedriver at /usr/bin yourself" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
echo "==> installing chromium and chromium-driver"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
/usr/bin/chromium --version
/usr/bin/chromedriver --version
