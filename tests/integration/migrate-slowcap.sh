#!/bin/bash
# migrate-slowcap.sh: a cap far below 1 MB/s (32 KiB/s) and a guest that
# dirties about 256 KiB in PUSH's first round.  PUSH's convergence test
# must judge the pause at the cap, which holds in the pause too: once
# assumed 1 MB/s, it called 256 KiB "fits the downtime budget" (8 s at the
# cap).  Here PUSH ends at its round limit, and the copy verifies.
. "$(dirname "$0")/lib.sh"
head -c 131072 /dev/urandom >"$T/src.img"
truncate -s 1M "$T/src.img"
cp --sparse=always "$T/src.img" "$T/src.img.orig"
start_serve "$T/src.img" --memory 16K
start_guest 64K
start_receiver
sleep 1
run_migrate --bandwidth 32K --compress=off --max-rounds 1 || fail "migration failed"
sleep 1
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
verify_image "$T/dst.img"
why=$(grep -o 'PUSH converged.*' "$T/migrate.log") || fail "no convergence decision logged"
case $why in
*"fits the downtime budget"*) fail "PUSH judged the pause faster than the 32 KiB/s cap: $why" ;;
*"round limit"*) ;;
*) fail "PUSH ended for an unexpected reason: $why" ;;
esac
echo "slowcap: $why"
