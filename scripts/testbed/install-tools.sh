#!/usr/bin/env bash
# Checks the system tools the multi-host test bed needs and, when running as root on a
# Debian-like system, installs the missing ones with apt-get. Prints what it does and, for
# anything it cannot install, which test-bed feature goes missing. Never fails the run:
# the test bed itself falls back (loopback ports) and specs skip with a reason.
#
#   ip (iproute2)   namespaces, veth pairs, bridge            required for netns mode
#   tc (iproute2)   netem delay/jitter/loss                   optional (kernel sch_netem)
#   iptables        SYN drops; delay/loss without sch_netem   optional
#   python3         NFQUEUE delay worker without sch_netem    optional
#   tcpdump         packet captures of a host's link          optional (scale.ts rtt row)
set -u

missing_pkgs=()
command -v ip >/dev/null 2>&1 || missing_pkgs+=(iproute2)
command -v tc >/dev/null 2>&1 || missing_pkgs+=(iproute2)
command -v iptables >/dev/null 2>&1 || command -v nft >/dev/null 2>&1 || missing_pkgs+=(iptables)
command -v python3 >/dev/null 2>&1 || missing_pkgs+=(python3)
command -v tcpdump >/dev/null 2>&1 || missing_pkgs+=(tcpdump)

if [ "${#missing_pkgs[@]}" -eq 0 ]; then
  echo "testbed tools: ip, tc, iptables/nft, python3, tcpdump present"
  exit 0
fi

# Deduplicate (iproute2 may be listed twice).
mapfile -t pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u)

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "testbed tools: installing ${pkgs[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >/tmp/testbed-apt.log 2>&1; then
    apt-get update >>/tmp/testbed-apt.log 2>&1
    apt-get install -y --no-install-recommends "${pkgs[@]}" >>/tmp/testbed-apt.log 2>&1 ||
      echo "testbed tools: apt-get failed (see /tmp/testbed-apt.log); features needing ${pkgs[*]} will be skipped"
  fi
else
  echo "testbed tools: missing ${pkgs[*]} (not root or no apt-get); features needing them will be skipped"
fi
exit 0
