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
# shellcheck source=scripts/apt-missing.sh
. "$(dirname "$0")/../apt-missing.sh"
install_missing "conformance" /tmp/rake-conformance-apt.log ${missing[@]+"${missing[@]}"}
