#!/usr/bin/env bash
# Checks the programs the test suite runs for real, and installs the missing ones with
# apt-get when it can (root, Debian). Run by `npm test` (pretest) and so by .ci/run.
#   cc, libc headers: the example C build (examples/hello-c) and the build specs
#   python3 >= 3.8:   rakeserver's spawn helper (src/server/spawn-helper.ts; os.posix_spawn)
#   jq:               spec/cli/logging.spec.ts pipes `--log-format json` stderr through it
#   openssl:          certificates: spec/reapi/client.spec.ts (its grpcs:// front), spec/tls/certs.ts
# Then the test bed's tools (ip, tc, iptables: scripts/testbed/install-tools.sh, which never
# fails): without iptables six test-bed specs skip, saying why. And Debian's chromium for
# spec/observe/report-browser.spec.ts (scripts/install-chromium.sh): if it cannot be had,
# that spec skips, saying why. Everything a spec needs is installed here: no spec installs.
set -euo pipefail
bash "$(dirname "$0")/testbed/install-tools.sh"
if ! bash "$(dirname "$0")/install-chromium.sh" >>/tmp/rake-test-apt.log 2>&1; then
  echo "test tools: chromium could not be installed (log: /tmp/rake-test-apt.log); the report browser spec will skip" >&2
fi
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ! python3 -c 'import os, sys; sys.exit(0 if sys.version_info >= (3, 8) and hasattr(os, "posix_spawn") else 1)' >/dev/null 2>&1; then
  missing+=(python3)
fi
# shellcheck source=scripts/apt-missing.sh
. "$(dirname "$0")/apt-missing.sh"
install_missing "test tools" /tmp/rake-test-apt.log ${missing[@]+"${missing[@]}"}
