#!/bin/bash
# migrate-ssh.sh: the default transport.  A private sshd on a loopback port
# (throwaway host and client keys, all files in $T) starts the receiver as
# `migrate-receive --image .. --nbd .. --exit-when-done` with the stream on
# ssh's stdin/stdout.  The guest keeps writing, moves to the destination
# socket at stop-and-copy, and the destination image matches its journal;
# the receiver's log comes back on ssh's stderr.
. "$(dirname "$0")/lib.sh"
start_sshd
# ---- the migration over ssh --------------------------------------------------
mkimage "$T/src.img" 64 60
start_serve "$T/src.img"
DST_SOCK=$T/dst.sock
start_guest 10M
sleep 2
kill -0 "$GUEST_PID" 2>/dev/null || fail "guest died before the migration: $(cat "$T/guest.log")"
"$XL_INCMIG" migrate -s "$SSH" --receiver "$XL_INCMIG migrate-receive" \
    --dest-image "$T/dst.img" --dest-nbd "unix:$DST_SOCK" \
    --no-progress --json "$T/report.json" "sim:$SRC_CTL" 127.0.0.1 \
    >"$T/migrate.out" 2>"$T/migrate.log" || fail "migration over ssh failed"
[ -S "$DST_SOCK" ] || fail "no destination export at $DST_SOCK after the migration"
sleep 2
stop_guest
grep -q 'reconnects' "$T/guest.log" || fail "no guest summary"
# The remote receiver has --exit-when-done: once the guest is gone it exits,
# and with it its sshd session.
wait_for "! pgrep -f -- '--image $T/dst.img' >/dev/null" 15 ||
    fail "the receiver started over ssh did not exit after the guest left"
[ -f "$T/dst.img" ] || fail "no destination image"
verify_image "$T/dst.img"
# The receiver's log reached us on ssh's stderr, interleaved in migrate.log.
grep -q 'xl-incmig migrate-receive' "$T/migrate.log" ||
    fail "no migrate-receive lines in migrate.log (receiver's stderr not forwarded)"
# And the session really went through our sshd with our key.
grep -q 'Accepted publickey' "$T/sshd.log" || fail "sshd did not log the login"
[ "$(json final_dirty_blocks)" -ge 0 ] || fail "no report"
[ "$(json wire_bytes)" -gt 0 ] || fail "report says nothing crossed the wire"

# ---- destination paths that need quoting -------------------------------------
# --dest-image/--dest-nbd are quoted for the remote shell; they must reach
# migrate-receive unchanged (a space and a quote here), not be split or
# interpreted on the remote side.
ssh_line="ssh: downtime $(json downtime_ms) ms, wire $(json wire_bytes) bytes, rounds $(json rounds)"
kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true
rm -f "$SRC_CTL" "$SRC_SOCK"
cp --sparse=always "$T/src.img.orig" "$T/src2.img"
start_serve "$T/src2.img"
Q="$T/dest dir's"
mkdir "$Q"
"$XL_INCMIG" migrate -s "$SSH" --receiver "$XL_INCMIG migrate-receive" \
    --dest-image "$Q/dst 2.img" --dest-nbd "unix:$Q/dst.sock" \
    --no-progress "sim:$SRC_CTL" 127.0.0.1 >"$T/migrate2.out" 2>"$T/migrate2.log" ||
    fail "migration over ssh to a destination path with a space and a quote failed (the remote command is not quoted for the remote shell): $(head -3 "$T/migrate2.log")"
cmp "$T/src.img.orig" "$Q/dst 2.img" || fail "quoted destination image differs from the source"
echo "$ssh_line"
