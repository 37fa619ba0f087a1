#!/bin/bash
# nbd-nbdcopy.sh: nbdcopy, with several connections and many requests in
# flight, copies a 64 MiB image (random data around a hole, so both WRITE
# and WRITE_ZEROES are used) into nbd-test-server's export and back out.
# The export starts filled with other random data, so a zeroing that did
# not happen shows up in the comparison.
. "$(dirname "$0")/lib.sh"
SERVER=$TESTS_BUILDDIR/integration/nbd-test-server
[ -x "$SERVER" ] || { echo "SKIP: $SERVER not built"; exit 77; }
requires nbdcopy
requires cmp

SIZE=$((64 << 20))
# Source: random, with a 16 MiB hole in the middle.
head -c $SIZE /dev/urandom >"$T/src.img"
truncate -s $SIZE "$T/src.img"
dd if=/dev/zero of="$T/src.img" bs=1M seek=24 count=16 conv=notrunc status=none
fallocate -p -o $((24 << 20)) -l $((16 << 20)) "$T/src.img" 2>/dev/null || true
head -c $SIZE /dev/urandom >"$T/export.img"
cmp -s "$T/src.img" "$T/export.img" && fail "images equal before the copy"

bg "$SERVER" "$T/export.img" "unix:$T/sock" >"$T/srv.out" 2>"$T/srv.log"
SRVPID=$LASTPID
wait_for "grep -q ready '$T/srv.out'" 20 || fail "server did not start"
URI="nbd+unix:///?socket=$T/sock"

nbdcopy --connections=4 --requests=32 --request-size=$((1 << 20)) --flush \
    "$T/src.img" "$URI" || fail "nbdcopy into the export"
cmp "$T/src.img" "$T/export.img" || fail "export differs from the source"
nbdcopy --connections=4 --requests=32 "$URI" "$T/out.img" ||
    fail "nbdcopy out of the export"
cmp "$T/src.img" "$T/out.img" || fail "copy read back differs from the source"
# Small requests too: many more of them in flight.
rm -f "$T/out.img"
nbdcopy --connections=2 --requests=64 --request-size=4096 "$URI" "$T/out.img" ||
    fail "nbdcopy out with 4K requests"
cmp "$T/src.img" "$T/out.img" || fail "4K-request copy differs"

kill "$SRVPID"
wait "$SRVPID" || fail "server exited with status $?"
echo PASS
