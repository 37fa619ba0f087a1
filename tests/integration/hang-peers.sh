#!/bin/bash
# hang-peers.sh: peers that stall never hang incmig (issue 11, deadlines).
#  1. squatters (one connects and sends nothing, one trickles a byte a
#     second) reach the receiver before the real source: they are closed
#     after --timeout and the real migration succeeds and verifies;
#     an idle client sits on the source's control socket meanwhile and
#     does not hold up migrate;
#  2. a source that goes silent after its handshake: the receiver gives up
#     after 4 * --timeout, says so, removes its copy;
#  3. a receiver that accepts and never answers: migrate gives up within
#     --timeout, the guest keeps running on the source;
#  4. SIGTERM to a receiver with a squatter connected ends it at once;
#  5. SIGINT to migrate during PUSH: it stops before the point of no
#     return, the guest keeps running on the source, which verifies.
. "$(dirname "$0")/lib.sh"
BADPEER=$TESTS_BUILDDIR/integration/badpeer
[ -x "$BADPEER" ] || { echo "SKIP: $BADPEER not built"; exit 77; }
requires python3

# squat PORT MODE: a client holding a connection to the receiver; it
# touches $T/squat-MODE once connected (python may take seconds to start on
# a loaded machine: a fixed sleep let the source arrive first)
squat() {
    bg python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
open(sys.argv[3], "w").close()
if sys.argv[2] == "trickle":
    for b in b"INCMIG\r\n\0\0\0\1\0\0\0\0":
        try: s.send(bytes([b]))
        except OSError: break
        time.sleep(1)
time.sleep(60)
' "$1" "$2" "$T/squat-$2"
}

# ---- 2. a source silent after its handshake ------------------------------
port=$(free_port)
bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$port" --image "$T/d2.img" \
    --nbd "unix:$T/d2.sock" --exit-when-done --timeout 1 2>"$T/recv2.log"
pid=$LASTPID
wait_for "grep -q 'waiting for the source' '$T/recv2.log'" 10 || fail "receiver 2 did not start"
timeout 40 "$BADPEER" source silent "127.0.0.1:$port" >"$T/bp-silent.log" 2>&1 &
bp=$!
wait_for "! kill -0 $pid" 8 || fail "the receiver still waits for a silent source after 8 s (--timeout 1: 4 s of silence before GO)"
st=0; wait "$pid" || st=$?
[ "$st" = 1 ] || fail "receiver 2 exited with status $st, expected 1"
grep -q 'no record from the source for 4 s' "$T/recv2.log" ||
    fail "receiver 2 does not say the source went silent: $(grep error "$T/recv2.log" | head -3)"
[ ! -e "$T/d2.img" ] || fail "receiver 2 left its partial copy"
kill "$bp" 2>/dev/null; wait "$bp" 2>/dev/null || true
echo "silent source: $(grep -o 'no record from the source for 4 s[^:]*' "$T/recv2.log")"

# ---- 4. SIGTERM with a squatter connected --------------------------------
port=$(free_port)
bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$port" --image "$T/d4.img" \
    --nbd "unix:$T/d4.sock" --exit-when-done 2>"$T/recv4.log"
pid=$LASTPID
wait_for "grep -q 'waiting for the source' '$T/recv4.log'" 10 || fail "receiver 4 did not start"
squat "$port" trickle
wait_for "[ -e '$T/squat-trickle' ]" 20 || fail "the squatter did not connect"
sleep 1
kill -TERM "$pid"
wait_for "! kill -0 $pid" 3 || fail "the receiver ignored SIGTERM with a squatter connected"
echo "SIGTERM with a squatter: receiver ended"

mkimage "$T/src.img" 16 50
start_serve "$T/src.img"
start_guest 2M
# ---- 3. a receiver that never answers ------------------------------------
port=$(free_port)
bg "$BADPEER" receiver silent "$port" >"$T/bpr-silent.log" 2>&1
wait_for "grep -q ready '$T/bpr-silent.log'" 10 || fail "badpeer receiver did not start"
s0=$(date +%s); rc=0
timeout 30 "$XL_INCMIG" migrate -s "" --no-progress --timeout 2 "sim:$SRC_CTL" \
    "127.0.0.1:$port" >"$T/m3.out" 2>"$T/m3.log" || rc=$?
s1=$(date +%s)
[ "$rc" = 1 ] || fail "migrate to a silent receiver exited with status $rc, expected 1"
[ $((s1 - s0)) -le 6 ] || fail "migrate took $((s1 - s0)) s to give up on a silent receiver (--timeout 2)"
grep -q 'deadline passed' "$T/m3.log" || fail "migrate does not say the receiver took too long: $(cat "$T/m3.log")"
grep -q 'failed before the point of no return' "$T/m3.log" || fail "migrate does not say the guest stays"
echo "silent receiver: migrate gave up in $((s1 - s0)) s"

# ---- 5. SIGINT to migrate during PUSH ------------------------------------
start_receiver
bg_migrate --bandwidth 2M
wait_for "grep -q 'incoming migration' '$T/receive.log'" 10 || fail "migration 5 did not start"
sleep 1
kill -INT "$MIG"
wait_for "! kill -0 $MIG" 5 || fail "migrate did not stop within 5 s of SIGINT"
rc=0; wait "$MIG" || rc=$?
[ "$rc" = 1 ] || fail "migrate stopped by SIGINT exited with status $rc, expected 1"
grep -q 'stopped before the point of no return' "$T/migrate.log" || fail "migrate does not say it stopped"
grep -q 'failed before the point of no return' "$T/migrate.log" || fail "migrate does not say the guest stays"
wait_for "! kill -0 $RECV_PID" 5 || fail "the receiver did not end after the source stopped"
[ ! -e "$T/dst.img" ] || fail "the receiver left its partial copy after the source stopped"
h1=$(md5sum <"$T/journal")
wait_for "[ \"\$(md5sum <'$T/journal')\" != '$h1' ]" 5 || fail "the guest stopped writing"
stop_guest
verify_image "$T/src.img"
echo "SIGINT during PUSH: source $(tail -n 1 "$T/verify.log")"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
rm -f "$T/journal" "$T/dst.img"
mkimage "$T/src.img" 16 50
start_serve "$T/src.img"
start_guest 2M
# an idle control client: connects and never sends a request
bg python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(120)' "$SRC_CTL"

# ---- 1. squatters first, then the real source ----------------------------
start_receiver --timeout 3
rm -f "$T"/squat-*
squat "$PORT" silent
squat "$PORT" trickle
wait_for "[ -e '$T/squat-silent' ] && [ -e '$T/squat-trickle' ]" 20 || fail "the squatters did not connect"
t0=$(date +%s.%N)
timeout 60 "$XL_INCMIG" migrate -s "" --no-progress --json "$T/report.json" --timeout 5 \
    "sim:$SRC_CTL" "127.0.0.1:$PORT" >"$T/migrate.out" 2>"$T/migrate.log" ||
    fail "the migration behind two squatters (and an idle control client) failed"
t1=$(date +%s.%N)
grep -Eq 'another connection was waiting|no incmig handshake within 3 s' "$T/receive.log" ||
    fail "the receiver does not say it closed the squatters"
sleep 1
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
verify_image "$T/dst.img"
echo "squatters + idle control client: migrated in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s; $(tail -n 1 "$T/verify.log")"

echo "hang-peers: every stall bounded"
