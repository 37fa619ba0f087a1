#!/bin/bash
# migrate-oddsize.sh: a disk of 1,049,088 bytes (256 blocks of 4 KiB and
# a 512-byte tail) migrates while the guest writes, and verifies: the
# destination volume has exactly the source's size, its blocks match the
# guest's journal, its partial last block matches the source's (nothing
# written past the end, nothing lost before it), and the destination's
# NBD export has the disk's size.
. "$(dirname "$0")/lib.sh"
SIZE=1049088
head -c $SIZE /dev/urandom >"$T/src.img"
cp "$T/src.img" "$T/src.img.orig"
start_serve "$T/src.img"
start_guest 1M
start_receiver
sleep 1
run_migrate --policy single || fail "migration of a $SIZE-byte disk failed"
sleep 1
if command -v nbdinfo >/dev/null 2>&1; then
    sz=$(nbdinfo --size "nbd+unix:///?socket=$DST_SOCK" 2>"$T/nbdinfo.log") ||
        fail "nbdinfo on the destination export: $(cat "$T/nbdinfo.log")"
    [ "$sz" = $SIZE ] || fail "the destination exports $sz bytes, not $SIZE"
fi
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
[ "$(stat -c %s "$T/dst.img")" = $SIZE ] ||
    fail "the destination volume has $(stat -c %s "$T/dst.img") bytes, not $SIZE"
verify_image "$T/dst.img"
cmp <(tail -c 512 "$T/src.img.orig") <(tail -c 512 "$T/dst.img") ||
    fail "the partial last block differs on the destination"
echo "oddsize: $SIZE bytes migrated, $(tail -n 1 "$T/verify.log"), tail intact"
