#!/bin/bash
# migrate-writing.sh: a guest writing throughout (with a hot spot).  It
# keeps writing on the destination after GO; every read it made was
# checked, and the final destination image matches its journal.  The
# source's serve runs with --debug, which logs the pause and each bitmap
# it hands to the toolstack.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 128 60
start_serve "$T/src.img" --debug
start_guest 20M
start_receiver
sleep 2
run_migrate || fail "migration failed"
sleep 2
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
verify_image "$T/dst.img"
grep -q 'reconnects' "$T/guest.log" || fail "no guest summary"
grep -q 'bitmap of src.img handed out' "$T/serve.log" || fail "serve --debug: no bitmap hand-over logged"
[ "$(json final_dirty_blocks)" -gt 0 ] || fail "no blocks left for PULL with a writing guest?"
echo "writing: downtime $(json downtime_ms) ms, wire $(json wire_bytes) bytes, rounds $(json rounds)"
