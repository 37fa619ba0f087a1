#!/bin/bash
# fail-mismatch.sh: a file already exists at the destination path, of
# another size.  The receiver creates its volumes and never overwrites a
# file it did not create (issue 9: --force and "truncate an existing image
# of the same size" are gone), so it refuses the disk (DISK_ACK) naming
# the disk and the path; the migration fails; the existing file is left
# exactly as it was (content, size, mtime) and the guest keeps running on
# the source, which verifies.  Once the file is moved away, the same
# receiver command line migrates the guest.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 64 50
head -c $((32 << 20)) /dev/urandom >"$T/dst.img"
touch -d '2020-01-02 03:04:05' "$T/dst.img"
sum0=$(md5sum <"$T/dst.img")
mtime0=$(stat -c %Y "$T/dst.img")
start_serve "$T/src.img"
start_guest 5M
start_receiver
sleep 1

rc=0
run_migrate || rc=$?
[ "$rc" = 1 ] || fail "migrate to an existing destination file exited with status $rc, expected 1"
grep -q "disk src.img: $T/dst.img already exists" "$T/migrate.log" ||
    fail "migrate does not say the destination file exists, naming the disk"
grep -q 'failed before the point of no return' "$T/migrate.log" ||
    fail "migrate does not say the guest stays on the source"
wait_for "! kill -0 $RECV_PID" 5 || fail "receiver still running after refusing the disk"
st=0; wait "$RECV_PID" || st=$?
[ "$st" = 1 ] || fail "receiver exited with status $st, expected 1"
grep -q "disk src.img: $T/dst.img already exists.*never overwrites" "$T/receive.log" ||
    fail "receiver does not say why it refused the disk"
[ -f "$T/dst.img" ] || fail "the existing destination image was removed"
[ "$(stat -c %s "$T/dst.img")" = $((32 << 20)) ] ||
    fail "the existing destination image changed size: $(stat -c %s "$T/dst.img")"
[ "$(md5sum <"$T/dst.img")" = "$sum0" ] || fail "the existing destination image was modified"
[ "$(stat -c %Y "$T/dst.img")" = "$mtime0" ] || fail "the existing destination image was touched (mtime)"
[ ! -e "$T/dst.sock" ] || fail "a refused migration left the staged NBD socket"

# the guest still runs on the source: it keeps writing, never reconnected
kill -0 "$SERVE_PID" || fail "the source export died"
h1=$(md5sum <"$T/journal")
wait_for "[ \"\$(md5sum <'$T/journal')\" != '$h1' ]" 5 ||
    fail "the guest stopped writing after the failed migration"
stop_guest
grep -q '"reconnects": 0' "$T/guest.json" || fail "the guest lost its source export"
verify_image "$T/src.img"
echo "mismatch: refused, $(tail -n 1 "$T/verify.log") on the source"

# --force is gone: a usage error, nothing touched.
rc=0
"$XL_INCMIG" migrate-receive --image "$T/dst.img" --nbd "unix:$T/f.sock" --force \
    >/dev/null 2>"$T/force.err" </dev/null || rc=$?
[ "$rc" = 2 ] || fail "migrate-receive --force exited with status $rc, expected 2 (a usage error)"
[ "$(md5sum <"$T/dst.img")" = "$sum0" ] || fail "--force modified the existing image"

# The file moved away: the same receiver takes the disk and the migration
# succeeds.  A fresh guest, with the source as it is now as the original.
mv "$T/dst.img" "$T/old-dst.img"
cp --sparse=always "$T/src.img" "$T/src.img.orig"
rm -f "$T/journal" "$T/guest.json"
start_guest 5M
start_receiver
sleep 1
run_migrate || fail "migration to a fresh destination path failed"
sleep 1
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
[ "$(stat -c %s "$T/dst.img")" = $((64 << 20)) ] || fail "destination is not 64 MiB"
verify_image "$T/dst.img"
[ "$(md5sum <"$T/old-dst.img")" = "$sum0" ] || fail "the old file changed"
echo "mismatch, path freed: $(tail -n 1 "$T/verify.log") on the destination"
