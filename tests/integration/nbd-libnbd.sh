#!/bin/bash
# nbd-libnbd.sh: the NBD server (libxl-ext/nbd.c, through nbd-test-server)
# against libnbd (nbd-client-check): handshake, options, I/O, many requests
# in flight, error replies, hand-made hostile bytes, TCP, a quiesce that
# must answer every request already read before it closes the connections,
# and a server staged held (requests wait until its start).
. "$(dirname "$0")/lib.sh"
SERVER=$TESTS_BUILDDIR/integration/nbd-test-server
CLIENT=$TESTS_BUILDDIR/integration/nbd-client-check
[ -x "$SERVER" ] || { echo "SKIP: $SERVER not built"; exit 77; }
[ -x "$CLIENT" ] || { echo "SKIP: $CLIENT not built"; exit 77; }
requires truncate
requires cmp

SIZE=$((64 << 20))
truncate -s $SIZE "$T/disk.img"

# start_server LOGNAME ARGS...: runs it, waits for "ready".
start_server() {
    local name=$1; shift
    bg "$SERVER" "$@" >"$T/$name.out" 2>"$T/$name.log"
    SRVPID=$LASTPID
    wait_for "grep -q ready '$T/$name.out'" 20 || fail "$name did not start"
}
stop_server() {
    kill "$SRVPID"
    wait "$SRVPID" || fail "server exited with status $? (sanitizer report?)"
}

# 1. Unix socket: libnbd checks, then the raw protocol checks.
start_server srv "$T/disk.img" "unix:$T/sock"
"$CLIENT" basic "nbd+unix:///?socket=$T/sock" $SIZE || fail "libnbd checks"
"$CLIENT" raw "$T/sock" || fail "raw protocol checks"
stop_server
[ ! -e "$T/sock" ] || fail "socket $T/sock not removed on exit"

# 2. A stale socket is replaced; a regular file in the way is refused.
python3 -c 'import socket,sys;socket.socket(socket.AF_UNIX).bind(sys.argv[1])' \
    "$T/stale" 2>/dev/null || true
if [ -S "$T/stale" ]; then
    start_server stale "$T/disk.img" "unix:$T/stale"
    stop_server
fi
echo data >"$T/notasock"
if "$SERVER" "$T/disk.img" "unix:$T/notasock" >"$T/refuse.out" 2>&1; then
    fail "server started on top of a regular file"
fi
[ "$(cat "$T/notasock")" = data ] || fail "regular file was clobbered"

# 3. TCP: the same libnbd checks on a fresh image.
PORT=$(free_port)
truncate -s 0 "$T/disk.img"; truncate -s $SIZE "$T/disk.img"
start_server tcp "$T/disk.img" "tcp:127.0.0.1:$PORT"
"$CLIENT" basic "nbd://127.0.0.1:$PORT/" $SIZE || fail "libnbd checks over TCP"
stop_server

# 4. Quiesce drains: slow writes (50 ms each, 4 workers) so that dozens are
# queued when the quiesce comes at 2 s; every acknowledged write must be
# in the file, no ops callback may still run when quiesce returns, and
# after the restart the export serves again.
truncate -s 0 "$T/disk.img"; truncate -s $((16 << 20)) "$T/disk.img"
start_server drain "$T/disk.img" "unix:$T/dsock" --workers 4 --delay-ms 50 \
    --quiesce-after-seconds 2 --restart-after 1
"$CLIENT" drain "nbd+unix:///?socket=$T/dsock" "$T/disk.img" \
    >"$T/drain-client.log" 2>&1 || { cat "$T/drain-client.log"; fail "drain check"; }
cat "$T/drain-client.log"
grep -q '^quiesced rc=0 clients=0 busy=0$' "$T/drain.out" ||
    fail "quiesce returned with work left: $(cat "$T/drain.out")"
grep -q '^restarted$' "$T/drain.out" || fail "server did not restart"
stop_server

# 5. Quiesce answers every request already read: 40 writes of 200 ms on
# 4 workers (2 s of work) are all queued when SIGUSR1 quiesces; the client
# must get 40 successful replies, then EOF, and the quiesce must have
# waited (~1.5 s; at least 1.2).  SIGUSR2 restarts; a new client is served.
truncate -s 0 "$T/disk.img"; truncate -s $SIZE "$T/disk.img"
start_server q "$T/disk.img" "unix:$T/qsock" --workers 4 --delay-ms 200
"$CLIENT" quiesce "$T/qsock" "$SRVPID" "$T/disk.img" >"$T/q-client.log" 2>&1 ||
    { cat "$T/q-client.log"; fail "quiesce check"; }
cat "$T/q-client.log"
secs=$(sed -n 's/.*EOF, \([0-9.]*\) s after.*/\1/p' "$T/q-client.log")
awk -v s="$secs" 'BEGIN { exit !(s >= 1.2) }' ||
    fail "quiesce returned after $secs s, before the queued writes could finish"
wait_for "grep -q '^quiesced' '$T/q.out'" 10 || fail "no quiesce report"
grep -q '^quiesced rc=0 clients=0 busy=0$' "$T/q.out" ||
    fail "quiesce returned with work left: $(cat "$T/q.out")"
kill -USR2 "$SRVPID"
wait_for "grep -q '^restarted$' '$T/q.out'" 10 || fail "no restart"
"$CLIENT" basic "nbd+unix:///?socket=$T/qsock" $SIZE >/dev/null ||
    fail "not serving after quiesce + start"
stop_server

# 6. Staged (the destination before GO): a held server completes the
# handshake and reads requests but executes none; its start answers them
# at once, a quiesce before the start drops them unanswered.
for how in start quiesce; do
    truncate -s 0 "$T/disk.img"; truncate -s $SIZE "$T/disk.img"
    start_server held-$how "$T/disk.img" "unix:$T/hsock" --held
    "$CLIENT" held "$T/hsock" "$SRVPID" "$T/disk.img" $how \
        >"$T/held-$how.log" 2>&1 || { cat "$T/held-$how.log"; fail "held, $how"; }
    cat "$T/held-$how.log"
    stop_server
done
echo PASS
