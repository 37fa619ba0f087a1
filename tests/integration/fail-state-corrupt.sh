#!/bin/bash
# fail-state-corrupt.sh: the simulated domain's state stream arrives
# corrupt (serve --fault corrupt-state flips one bit of a page after the
# checksum is taken).  The destination must refuse it before GO: the
# migration fails, the guest resumes on the source with its disk untouched
# and keeps writing there, and the destination keeps nothing.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 32 50
start_serve "$T/src.img" --fault corrupt-state
start_guest 4M
start_receiver
sleep 1
run_migrate && fail "a corrupt state stream was accepted"
grep -q "state stream corrupt" "$T/receive.log" || fail "receiver: no clear reason: $(tail -3 "$T/receive.log")"
grep -q "before the point of no return" "$T/migrate.log" || fail "migrate: $(tail -3 "$T/migrate.log")"
wait_for "grep -q 'guest resumed on the source' '$T/serve.log'" 10 || fail "the source did not resume the guest"
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver still running"
[ ! -e "$T/dst.img" ] || fail "partial copy left behind"
w0=$(guest_writes); sleep 2
[ "$(guest_writes)" -gt "$w0" ] || fail "the guest does not write on the source any more"
stop_guest
verify_image "$T/src.img"
echo "state-corrupt: refused before GO, guest resumed on the source"
