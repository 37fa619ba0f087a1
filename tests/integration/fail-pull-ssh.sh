#!/bin/bash
# fail-pull-ssh.sh: the default ssh transport loses its link during PULL
# (ssh runs through a proxy that goes down for 3 s).  The receiver waits on
# its rendezvous socket; the source opens a new ssh session running
# `migrate-receive --attach`, which relays the stream to it, and PULL
# completes.  The guest, running on the destination throughout, loses
# nothing.
. "$(dirname "$0")/lib.sh"
start_sshd
mkimage "$T/src.img" 64 60
start_serve "$T/src.img"
DST_SOCK=$T/dst.sock
start_guest 8M
PORT=$SSH_PORT
start_proxy
SSHP=${SSH/-p $SSH_PORT/-p $PPORT}
"$XL_INCMIG" migrate -s "$SSHP" --receiver "$XL_INCMIG migrate-receive" \
    --dest-image "$T/dst.img" --dest-nbd "unix:$DST_SOCK" --policy single \
    --bandwidth 6M --reconnect 60 --no-progress --json "$T/report.json" \
    "sim:$SRC_CTL" 127.0.0.1 >"$T/migrate.out" 2>"$T/migrate.log" & MIG=$!
PIDS="$PIDS $MIG"
wait_for "grep -q 'GO:' '$T/migrate.log'" 60 || fail "never reached GO"
proxy down
sleep 3
proxy up
wait $MIG || fail "migration failed after the link came back: $(tail -5 "$T/migrate.log")"
grep -q "link re-established" "$T/migrate.log" || fail "PULL was not resumed (over before the cut?)"
sleep 1
stop_guest
wait_for "! pgrep -f -- '--image $T/dst.img' >/dev/null" 15 || fail "receiver did not exit"
verify_image "$T/dst.img"
echo "ssh pull cut: resumed; demand $(json demand_blocks) blocks, background $(json background_blocks)"
