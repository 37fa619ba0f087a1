#!/bin/bash
# tls-pull-linkcut.sh: fail-pull-linkcut.sh over TLS (PSK): the link goes
# down during PULL; the source's new connection does a new TLS handshake,
# the receiver takes it, PULL completes and the destination verifies.
. "$(dirname "$0")/lib.sh"
mk_psk "$T/keys.psk"
mkimage "$T/src.img" 32 60
start_serve "$T/src.img"
start_guest 8M
start_receiver --reconnect 60 --tls-psk "$T/keys.psk"
start_proxy
bg_migrate --policy single --bandwidth 4M --reconnect 60 --tls-psk "$T/keys.psk"
wait_for "grep -q 'GO:' '$T/receive.log'" 60 || fail "never reached GO"
proxy down
sleep 2
proxy up
wait $MIG || fail "migration failed after the link came back: $(tail -3 "$T/migrate.log")"
grep -q "link re-established" "$T/migrate.log" || fail "source did not resume PULL (was PULL over before the cut?)"
grep -q "source reconnected" "$T/receive.log" || fail "receiver did not see the reconnection"
sleep 1
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
verify_image "$T/dst.img"
echo "tls pull link cut: demand $(json demand_blocks) blocks, background $(json background_blocks) blocks"
