#!/bin/bash
# fail-nospace.sh: the destination filesystem fills up during PUSH.  The
# receiver runs in a private mount namespace whose image directory is an
# 8 MiB tmpfs; the source disk is 64 MiB with half of it allocated.  The
# migration must fail saying the destination has no space left (before
# PUSH, naming the disk: the whole disk must fit), the
# receiver must exit 1 and remove its partial copy, and the guest keeps
# running on the source, which verifies block by block.
. "$(dirname "$0")/lib.sh"
requires unshare
mkdir -p "$T/mnt"
if ! unshare -m sh -c "mount -t tmpfs -o size=8M tmpfs '$T/mnt'" 2>"$T/unshare.err"; then
    echo "SKIP: cannot mount a tmpfs in a private mount namespace: $(cat "$T/unshare.err")"
    exit 77
fi

mkimage "$T/src.img" 64 50
start_serve "$T/src.img"
start_guest 5M

# The receiver, inside the namespace.  After it exits, the wrapper records
# its status and what is left in the small filesystem (which vanishes with
# the namespace).
PORT=$(free_port)
DST_SOCK=$T/dst.sock
bg unshare -m sh -c '
    mount -t tmpfs -o size=8M tmpfs "$1/mnt" || exit 99
    "$2" migrate-receive --listen "127.0.0.1:$3" --image "$1/mnt/dst.img" \
        --nbd "unix:$1/dst.sock" --exit-when-done 2>"$1/receive.log" &
    echo $! >"$1/recv.pid"
    st=0; wait $! || st=$?
    ls -A "$1/mnt" >"$1/left.txt"
    df -k "$1/mnt" >"$1/df.txt"
    echo $st >"$1/recv.status"
' sh "$T" "$XL_INCMIG" "$PORT"
WRAP_PID=$LASTPID
wait_for "[ -s '$T/recv.pid' ]" 10 || fail "receiver wrapper did not start"
PIDS="$PIDS $(cat "$T/recv.pid")"
wait_for "grep -q 'waiting for the source' '$T/receive.log'" 20 || fail "receiver did not start"
sleep 1

rc=0
timeout 30 "$XL_INCMIG" migrate -s "" --no-progress --json "$T/report.json" \
    "sim:$SRC_CTL" "127.0.0.1:$PORT" >"$T/migrate.out" 2>"$T/migrate.log" || rc=$?
[ "$rc" = 1 ] || fail "migrate to a full destination exited with status $rc, expected 1"

wait_for "[ -s '$T/recv.status' ]" 10 || fail "receiver still running after the failure"
[ "$(cat "$T/recv.status")" = 1 ] || fail "receiver exited with status $(cat "$T/recv.status"), expected 1"
grep -qi 'no space left on' "$T/receive.log" || fail "receiver does not say the destination is full"
grep -q 'partial copy .*discarded' "$T/receive.log" || fail "receiver does not say it discarded its copy"
[ ! -s "$T/left.txt" ] || fail "partial copy left on the destination: $(cat "$T/left.txt")"
[ ! -e "$T/dst.sock" ] || fail "staged NBD socket left behind"
grep -q 'failed before the point of no return' "$T/migrate.log" ||
    fail "migrate does not say the guest stays on the source"

kill -0 "$SERVE_PID" || fail "the source export died"
h1=$(md5sum <"$T/journal")
wait_for "[ \"\$(md5sum <'$T/journal')\" != '$h1' ]" 5 ||
    fail "the guest stopped writing after the failed migration"
stop_guest
grep -q '"reconnects": 0' "$T/guest.json" || fail "the guest lost its source export"
verify_image "$T/src.img"
# The source must report why (the receiver's ERROR record), not only that
# the link went away.  Checked last so that the checks above still run.
grep -qi 'no space left on' "$T/migrate.log" ||
    fail "migrate does not say the destination is out of space: $(grep -i error "$T/migrate.log" | sort | uniq -c | head -n 3)"
# The whole disk cannot fit: refused at DISK_ACK, naming the disk, before
# a block was pushed (issue 11).
grep -q 'cannot take disk 0 (src.img):.*no space left on the destination' "$T/migrate.log" ||
    fail "migrate does not name the disk that cannot fit: $(grep -i 'disk 0' "$T/migrate.log" | head -n 2)"
grep -q 'PUSH round 0' "$T/migrate.log" && fail "blocks were pushed before the space was checked"
echo "nospace: $(grep -io 'no space left on[a-z ]*' "$T/migrate.log" | head -n 1); $(tail -n 1 "$T/verify.log") on the source"
