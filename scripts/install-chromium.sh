#!/usr/bin/env bash
# Installs Debian's chromium for the HTML report spec (spec/observe/report-browser.spec.ts),
# which drives it headless through playwright-core. Does nothing when it is already there.
# Needs root (or sudo) and the Debian package mirrors; exits non-zero if it cannot install.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "install-chromium: not root and no password-less sudo; install it with: apt-get install -y chromium" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null 2>&1
