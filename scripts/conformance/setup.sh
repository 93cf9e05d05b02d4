#!/usr/bin/env bash
# Installs what scripts/conformance/bazel.sh needs, with apt-get when it can (root, Debian):
#   bazel-bootstrap  Debian's Bazel 4 (an independent REAPI client)
#   bazel-platforms  the @platforms repository Bazel 4 loads (it cannot fetch it offline)
#   gcc, libc6-dev   the C toolchain Bazel configures and the remote actions run
# Run by .ci/run before the conformance check; not by `npm test` (Bazel and its JDK are large).
set -euo pipefail
missing=()
command -v bazel >/dev/null 2>&1 || missing+=(bazel-bootstrap)
[ -d /usr/share/bazel/platforms ] || missing+=(bazel-platforms)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "conformance: installing ${missing[*]} with apt-get (log: /tmp/rake-conformance-apt.log)"
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/rake-conformance-apt.log 2>&1; then
    apt-get update >>/tmp/rake-conformance-apt.log 2>&1
    apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/rake-conformance-apt.log 2>&1
  fi
  exit 0
fi
echo "conformance: missing ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
exit 1
