#!/bin/bash
# fail-push-linkcut.sh: the link is cut in the middle of PUSH round 0.
# The migration fails with a clear error, the guest never notices (it keeps
# running on the source, no reconnection), the source image holds exactly
# what the guest wrote, and the receiver discards its partial copy.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 64 50
start_serve "$T/src.img"
start_guest 5M
start_receiver
start_proxy
proxy "cut-after 8000000"
if run_migrate --bandwidth 20M; then fail "migration succeeded through a cut link"; fi
grep -q "before the point of no return" "$T/migrate.log" || fail "no clear message: $(tail -3 "$T/migrate.log")"
grep -q "lost\|closed\|reset" "$T/migrate.log" || fail "the message does not say the link was lost"
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver still running"
wait "$RECV_PID" && fail "receiver exited 0 after a failed migration"
[ ! -e "$T/dst.img" ] || fail "partial copy left on the destination"
grep -q "discarded" "$T/receive.log" || fail "receiver did not say it discarded the copy"
kill -0 "$SERVE_PID" || fail "source export died"
sleep 1
stop_guest
grep -q " 0 reconnects" "$T/guest.log" || fail "guest was disconnected: $(tail -1 "$T/guest.log")"
verify_image "$T/src.img"
echo "push link cut: $(grep -o 'migration failed.*' "$T/migrate.log" | head -1)"
