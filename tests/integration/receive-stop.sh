#!/bin/bash
# receive-stop.sh: the receiver is stopped (SIGTERM, which xl-incmig turns
# into incmig_stop) in the middle of PUSH.  It must end within a few
# seconds without waiting for the source, say it stopped before the point
# of no return, tell the source (which fails and resumes nothing: the
# guest never left), and remove the volume it created -- and only that:
# another file in the same directory stays.  The guest keeps writing on
# the source, which verifies.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 64 50
echo keep >"$T/neighbour.img"
start_serve "$T/src.img"
start_guest 4M
start_receiver
sleep 1
bg_migrate --bandwidth 2M
wait_for "[ -e '$T/dst.img' ] && grep -q 'incoming migration' '$T/receive.log'" 20 ||
    fail "the migration did not start"
sleep 2
kill -TERM "$RECV_PID"
t0=$(date +%s)
wait_for "! kill -0 $RECV_PID" 5 || fail "the receiver did not stop within 5 s of SIGTERM"
st=0; wait "$RECV_PID" || st=$?
[ "$st" = 1 ] || fail "the stopped receiver exited with status $st, expected 1"
grep -q 'stopped before the point of no return' "$T/receive.log" ||
    fail "the receiver does not say it stopped before the point of no return"
grep -q 'partial copy .*discarded' "$T/receive.log" || fail "the receiver does not say it removed its copy"
[ ! -e "$T/dst.img" ] || fail "the stopped receiver left its partial copy"
[ ! -e "$T/dst.sock" ] || fail "the stopped receiver left its staged NBD socket"
[ "$(cat "$T/neighbour.img")" = keep ] || fail "a file the receiver did not create was touched"
rc=0; wait "$MIG" || rc=$?
[ "$rc" = 1 ] || fail "migrate exited with status $rc, expected 1"
grep -q 'failed before the point of no return' "$T/migrate.log" ||
    fail "migrate does not say the guest stays on the source"
grep -qi 'interrupted' "$T/migrate.log" ||
    fail "migrate does not report why the receiver failed: $(grep -i error "$T/migrate.log" | head -3)"
kill -0 "$SERVE_PID" || fail "the source export died"
h1=$(md5sum <"$T/journal")
wait_for "[ \"\$(md5sum <'$T/journal')\" != '$h1' ]" 5 || fail "the guest stopped writing"
stop_guest
grep -q '"reconnects": 0' "$T/guest.json" || fail "the guest lost its source export"
verify_image "$T/src.img"
echo "receive-stop: stopped in $(( $(date +%s) - t0 )) s, copy removed; source: $(tail -n 1 "$T/verify.log")"
