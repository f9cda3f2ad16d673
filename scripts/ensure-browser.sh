#!/usr/bin/env bash
# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads a browser
# here). Installs it when it is missing; needs root, as CI and the dev machines run.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "installing Debian's chromium for the browser tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
command -v chromium
