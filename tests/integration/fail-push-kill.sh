#!/bin/bash
# fail-push-kill.sh: either process killed (SIGKILL) during a migration,
# before the point of no return:
#  1. the toolstack (migrate) during PUSH: the source never paused; the
#     receiver sees the link end and discards its copy;
#  2. the receiver during PUSH: migrate fails clearly, the source serves on;
#  3. the toolstack while the guest is paused (pre-copy-only policy, slow
#     link): the source export notices the toolstack is gone and resumes
#     the guest, which reconnects to the source and carries on.
# In every case the source image verifies against the guest's journal.
. "$(dirname "$0")/lib.sh"

one_case() {   # $1 = name, $2 = "paused" when the guest was paused
    wait_for "! kill -0 $SERVE_PID" 1 && fail "$1: source export died"
    sleep 1
    stop_guest
    # A kill during PUSH must not disturb the guest at all.
    [ "${2:-}" = paused ] || grep -q " 0 reconnects" "$T/guest.log" ||
        fail "$1: the guest lost its connection: $(tail -1 "$T/guest.log")"
    verify_image "$T/src.img"
    kill "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    rm -f "$T"/*.sock "$T"/*.ctl "$T/journal" "$T/dst.img"
    echo "$1: ok"
}

# 1. kill migrate during PUSH
mkimage "$T/src.img" 64 50
start_serve "$T/src.img"
start_guest 5M
start_receiver
bg_migrate --bandwidth 4M
sleep 2
kill -9 $MIG; wait $MIG 2>/dev/null || true
wait_for "! kill -0 $RECV_PID" 10 || fail "1: receiver still running"
[ ! -e "$T/dst.img" ] || fail "1: partial copy left behind"
one_case "kill migrate during PUSH"

# 2. kill the receiver during PUSH
mkimage "$T/src.img" 64 50
start_serve "$T/src.img"
start_guest 5M
start_receiver
bg_migrate --bandwidth 4M
sleep 2
kill -9 "$RECV_PID"
wait $MIG && fail "2: migration succeeded without a receiver"
grep -q "before the point of no return" "$T/migrate.log" || fail "2: no clear message: $(tail -3 "$T/migrate.log")"
one_case "kill receiver during PUSH"

# 3. kill migrate while the guest is paused
# writes spread over half the disk keep many blocks dirty, so the paused
# pre-copy phase lasts seconds at this cap: time enough to kill migrate
mkimage "$T/src.img" 32 50
start_serve "$T/src.img"
start_guest 8M --hot 100:50
start_receiver
bg_migrate --policy precopy --max-rounds 1 --bandwidth 4M
wait_for "grep -q 'guest paused' '$T/serve.log'" 60 || fail "3: guest never paused"
kill -9 $MIG; wait $MIG 2>/dev/null || true
wait_for "grep -q 'resuming the guest here' '$T/serve.log'" 10 || fail "3: source did not resume the guest"
wait_for "! kill -0 $RECV_PID" 10 || fail "3: receiver still running"
[ ! -e "$T/dst.img" ] || fail "3: partial copy left behind"
sleep 2
kill -0 "$GUEST_PID" || fail "3: guest gave up"
one_case "kill migrate while paused" paused
grep -q " [1-9][0-9]* reconnects" "$T/guest.log" || fail "3: guest did not reconnect"
