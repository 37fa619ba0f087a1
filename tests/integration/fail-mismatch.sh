#!/bin/bash
# fail-mismatch.sh: the destination image exists with another size.  The
# receiver refuses the disk (DISK_ACK) and the migration fails naming both
# sizes; the existing destination file is left exactly as it was and the
# guest keeps running on the source, which verifies.  With --force the
# receiver overwrites that file and the migration succeeds.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 64 50
head -c $((32 << 20)) /dev/urandom >"$T/dst.img"
sum0=$(md5sum <"$T/dst.img")
start_serve "$T/src.img"
start_guest 5M
start_receiver
sleep 1

rc=0
run_migrate || rc=$?
[ "$rc" = 1 ] || fail "migrate to a 32 MiB destination exited with status $rc, expected 1"
grep -q '33554432' "$T/migrate.log" && grep -q '67108864' "$T/migrate.log" ||
    fail "migrate does not name both sizes (32 MiB destination, 64 MiB disk)"
grep -q 'failed before the point of no return' "$T/migrate.log" ||
    fail "migrate does not say the guest stays on the source"
wait_for "! kill -0 $RECV_PID" 5 || fail "receiver still running after refusing the disk"
st=0; wait "$RECV_PID" || st=$?
[ "$st" = 1 ] || fail "receiver exited with status $st, expected 1"
grep -q '33554432' "$T/receive.log" && grep -q '67108864' "$T/receive.log" ||
    fail "receiver does not name both sizes"
[ -f "$T/dst.img" ] || fail "the existing destination image was removed"
[ "$(stat -c %s "$T/dst.img")" = $((32 << 20)) ] ||
    fail "the existing destination image changed size: $(stat -c %s "$T/dst.img")"
[ "$(md5sum <"$T/dst.img")" = "$sum0" ] || fail "the existing destination image was modified"

# the guest still runs on the source: it keeps writing, never reconnected
kill -0 "$SERVE_PID" || fail "the source export died"
h1=$(md5sum <"$T/journal")
wait_for "[ \"\$(md5sum <'$T/journal')\" != '$h1' ]" 5 ||
    fail "the guest stopped writing after the failed migration"
stop_guest
grep -q '"reconnects": 0' "$T/guest.json" || fail "the guest lost its source export"
verify_image "$T/src.img"
echo "mismatch: refused, $(tail -n 1 "$T/verify.log") on the source"

# --force: the file of another size is overwritten, the migration succeeds.
# A fresh guest, with the source as it is now as the original.
cp --sparse=always "$T/src.img" "$T/src.img.orig"
rm -f "$T/journal" "$T/guest.json"
start_guest 5M
start_receiver --force
sleep 1
run_migrate || fail "migration with --force failed"
sleep 1
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
[ "$(stat -c %s "$T/dst.img")" = $((64 << 20)) ] || fail "--force: destination is not 64 MiB"
verify_image "$T/dst.img"
echo "mismatch --force: $(tail -n 1 "$T/verify.log") on the destination"
