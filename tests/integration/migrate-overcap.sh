#!/bin/bash
# migrate-overcap.sh: the guest writes faster than the link's cap.  PUSH
# cannot converge, so the policy stops the rounds; stop-and-copy sends only
# the bitmap and PULL finishes because the source no longer changes.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 64 30
start_serve "$T/src.img"
start_guest 16M
start_receiver
sleep 1
run_migrate --bandwidth 8M --max-rounds 6 || fail "migration failed"
sleep 1
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
verify_image "$T/dst.img"
grep -q 'PUSH converged' "$T/migrate.log" || fail "no convergence decision logged"
stop=$(grep -o '"stopcopy":[0-9]*' "$T/report.json" | head -n 1 | cut -d: -f2)
# stop-and-copy carried a bitmap, not blocks: a few KiB at most
[ "$stop" -lt 65536 ] || fail "stop-and-copy sent $stop bytes"
[ "$(json final_dirty_blocks)" -gt 0 ] || fail "nothing left for PULL"
echo "overcap: stop-and-copy $stop bytes, final set $(json final_dirty_blocks) blocks"
