# Sourced by scripts/ensure-test-tools.sh and scripts/conformance/setup.sh:
#   install_missing LABEL LOG PACKAGE...
# Installs the packages with apt-get when it can (root, Debian; `apt-get update` only when a
# first install fails), logging to LOG; otherwise says what is missing and how to get it and
# returns 1. With no package it returns 0 at once.
install_missing() {
  local label=$1 log=$2
  shift 2
  [ $# -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$label: installing $* with apt-get (log: $log)"
    if ! apt-get install -y --no-install-recommends "$@" >"$log" 2>&1; then
      apt-get update >>"$log" 2>&1
      apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1
    fi
    return 0
  fi
  echo "$label: missing $*; install them (as root: apt-get install $*)" >&2
  return 1
}
