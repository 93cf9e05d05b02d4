#!/usr/bin/env bash
# Checks the tools the benchmark suite compares against and, as root on a Debian-like
# system, installs the missing ones with apt-get (printing that it does). Never fails: a
# tool still missing turns into a "skipped: why" line in docs/benchmarks.md.
#
#   make, cc (build-essential)   the `make -jK` baseline and every compile     required
#   distcc, distccd (distcc)     the distcc baseline                           optional
#
# The multi-host test bed's tools (ip, iptables, python3) are checked by
# scripts/testbed/install-tools.sh, which this script runs too.
set -u

here="$(cd "$(dirname "$0")" && pwd)"

missing_pkgs=()
command -v make >/dev/null 2>&1 || missing_pkgs+=(make)
command -v cc >/dev/null 2>&1 || missing_pkgs+=(gcc libc6-dev)
command -v distcc >/dev/null 2>&1 && command -v distccd >/dev/null 2>&1 || missing_pkgs+=(distcc)

if [ "${#missing_pkgs[@]}" -eq 0 ]; then
  echo "bench tools: make, cc, distcc, distccd present ($(distcc --version 2>/dev/null | head -n 1))"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bench tools: installing ${missing_pkgs[*]} with apt-get (log: /tmp/bench-apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${missing_pkgs[@]}" >/tmp/bench-apt.log 2>&1; then
    apt-get update >>/tmp/bench-apt.log 2>&1
    apt-get install -y --no-install-recommends "${missing_pkgs[@]}" >>/tmp/bench-apt.log 2>&1 ||
      echo "bench tools: apt-get failed (see /tmp/bench-apt.log); comparisons needing ${missing_pkgs[*]} will be skipped"
  fi
  # Debian starts a distccd service on install; the suite runs its own daemons.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop distcc >/dev/null 2>&1 || true; fi
  command -v distcc >/dev/null 2>&1 && echo "bench tools: $(distcc --version | head -n 1)"
else
  echo "bench tools: missing ${missing_pkgs[*]} (not root or no apt-get); comparisons needing them will be skipped"
fi

bash "$here/../testbed/install-tools.sh"
exit 0
