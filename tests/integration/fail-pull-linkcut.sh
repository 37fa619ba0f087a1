#!/bin/bash
# fail-pull-linkcut.sh: the link goes down during PULL, for 3 s.  The guest
# runs on the destination throughout (reads of missing blocks stall); the
# source reconnects, learns what is still missing, and PULL completes.
# Nothing the guest wrote before, during or after is lost.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 64 60
start_serve "$T/src.img"
start_guest 8M
start_receiver --reconnect 60
start_proxy
bg_migrate --policy single --bandwidth 6M --reconnect 60
wait_for "grep -q 'GO:' '$T/receive.log'" 60 || fail "never reached GO"
proxy down
sleep 3
proxy up
wait $MIG || fail "migration failed after the link came back: $(tail -3 "$T/migrate.log")"
grep -q "link re-established" "$T/migrate.log" || fail "source did not resume PULL (was PULL over before the cut?)"
grep -q "source reconnected" "$T/receive.log" || fail "receiver did not see the reconnection"
sleep 1
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
verify_image "$T/dst.img"
echo "pull link cut: demand $(json demand_blocks) blocks, background $(json background_blocks) blocks"
