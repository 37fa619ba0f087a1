# lib.sh: shared helpers for the integration tests (sourced).
# Each test gets a private directory, killed and removed on exit.
set -eu
XL_INCMIG=${XL_INCMIG:-$(cd "$(dirname "$0")/../.." && pwd)/tools/xl-incmig}
TESTS_BUILDDIR=${TESTS_BUILDDIR:-$(cd "$(dirname "$0")/.." && pwd)}
T=$(mktemp -d /tmp/incmig-test.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
    if [ "${KEEP:-}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
requires() { command -v "$1" >/dev/null 2>&1 || { echo "SKIP: $1 not found"; exit 77; }; }
fail() { echo "FAIL: $*" >&2; for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -30 "$f" >&2; }; done; exit 1; }
bg() { "$@" & PIDS="$PIDS $!"; LASTPID=$!; }
# wait_for COND_CMD [seconds]: poll until COND_CMD succeeds
wait_for() { local i=0 n=$(( ${2:-20} * 10 )); while ! eval "$1" >/dev/null 2>&1; do i=$((i+1)); [ $i -ge $n ] && return 1; sleep 0.1; done; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 )); }
