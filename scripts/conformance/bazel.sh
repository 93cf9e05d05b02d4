#!/usr/bin/env bash
# Conformance with an independent REAPI client: Debian's Bazel builds a small workspace (a
# genrule and a cc_binary of several files) with --remote_executor pointing at our
# `rakeserver --reapi-port`, every action remote (no local fallback). Then, after
# `bazel clean`, the same build must be answered from the server's ActionCache.
# Needs `npm run build` (dist/) and scripts/conformance/setup.sh. Run by .ci/run.
# Prints "conformance: N passed, N failed" and exits non-zero on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
started=$(date +%s)
work="$(mktemp -d "${TMPDIR:-/tmp}/rake-conformance-XXXXXX")"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
passed=0
failed=0
check() { # check NAME CONDITION-EXIT-STATUS DETAIL
  if [ "$2" -eq 0 ]; then
    echo "ok: $1"
    passed=$((passed + 1))
  else
    echo "FAILED: $1${3:+ ($3)}"
    failed=$((failed + 1))
  fi
}
finish() {
  echo "conformance (bazel): $(($(date +%s) - started)) s; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "conformance: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

command -v bazel >/dev/null || { echo "FAILED: bazel is not installed (run scripts/conformance/setup.sh)"; failed=1; finish; }
[ -f "$root/dist/rakeserver.mjs" ] || { echo "FAILED: dist/ is missing (npm run build)"; failed=1; finish; }

cp -r "$here/bazel-workspace" "$work/ws"
node "$root/bin/rakeserver.js" --port 0 --reapi-port 0 --max-jobs 2 --log-level info \
  --workdir "$work/server" 2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 300); do # up to 30 s for the server to listen
  port="$(grep '"msg":"REAPI listening"' "$work/server.log" | head -1 | sed 's/.*"port":\([0-9]*\).*/\1/')"
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "FAILED: rakeserver --reapi-port did not start:"; cat "$work/server.log"; failed=1; finish
fi
echo "rakeserver: REAPI on 127.0.0.1:$port; bazel-bootstrap $(dpkg-query -W -f '${Version}' bazel-bootstrap 2>/dev/null || echo "(not from Debian)")"

bazel_build() { # bazel_build LOG
  (cd "$work/ws" && timeout 600 bazel --batch --output_user_root="$work/bazel-root" build \
    --override_repository=rules_cc="$here/bazel-rules/rules_cc" \
    --override_repository=rules_java="$here/bazel-rules/rules_java" \
    --override_repository=platforms=/usr/share/bazel/platforms \
    --remote_executor="grpc://127.0.0.1:$port" --remote_local_fallback=false \
    --noshow_progress --color=no --curses=no //:hello) >"$1" 2>&1
}

t0=$(date +%s)
bazel_build "$work/build1.log"
status=$?
echo "first build: $(($(date +%s) - t0)) s; $(grep -o '[0-9]* processes:.*' "$work/build1.log" | head -1)"
check "bazel build //:hello with --remote_executor succeeds" "$status" "see below"
[ "$status" -eq 0 ] || grep -v linux-sandbox "$work/build1.log" | tail -30
remote=$(grep -o '[0-9]* remote[,.]' "$work/build1.log" | head -1 | grep -o '[0-9]*')
[ "${remote:-0}" -ge 4 ]
check "the genrule, the compiles and the link ran remotely (${remote:-0} remote processes)" $?
out="$("$work/ws/bazel-bin/hello" 2>&1)"
[ "$out" = "built remotely by rakeserver: 2+3=5 6*7=42" ]
check "the remotely built program runs" $? "$out"
ran=$(grep -c '"msg":"action done"' "$work/server.log")
[ "$ran" -eq "${remote:-0}" ] && [ "$ran" -gt 0 ]
check "the server ran exactly those actions ($ran)" $?

(cd "$work/ws" && bazel --batch --output_user_root="$work/bazel-root" clean >/dev/null 2>&1)
t0=$(date +%s)
bazel_build "$work/build2.log"
status=$?
echo "second build: $(($(date +%s) - t0)) s; $(grep -o '[0-9]* processes:.*' "$work/build2.log" | head -1)"
hits=$(grep -o '[0-9]* remote cache hit' "$work/build2.log" | head -1 | grep -o '^[0-9]*')
[ "$status" -eq 0 ] && [ "${hits:-0}" -ge 4 ]
check "after bazel clean, the build is answered from the ActionCache (${hits:-0} hits)" $?
[ "$(grep -c '"msg":"action done"' "$work/server.log")" -eq "$ran" ]
check "nothing ran again on the server" $?
"$work/ws/bazel-bin/hello" >/dev/null 2>&1
check "the program from cached outputs runs" $?
finish
