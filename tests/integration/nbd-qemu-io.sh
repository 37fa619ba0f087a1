#!/bin/bash
# nbd-qemu-io.sh: qemu's NBD client against nbd-test-server: qemu-io
# patterns (write -P, read -P verification, FUA, write -z, discard, flush,
# aio bursts), then qemu-img convert into the export, checked with
# qemu-img compare and cmp.  qemu-io's exit status does not always reflect
# a failed command, so its output is checked as well.
. "$(dirname "$0")/lib.sh"
SERVER=$TESTS_BUILDDIR/integration/nbd-test-server
[ -x "$SERVER" ] || { echo "SKIP: $SERVER not built"; exit 77; }
requires qemu-io
requires qemu-img
requires cmp

SIZE=$((64 << 20))
head -c $SIZE /dev/urandom >"$T/export.img"
bg "$SERVER" "$T/export.img" "unix:$T/sock" >"$T/srv.out" 2>"$T/srv.log"
SRVPID=$LASTPID
wait_for "grep -q ready '$T/srv.out'" 20 || fail "server did not start"
URI="nbd+unix:///?socket=$T/sock"

# qio NAME ARGS...: runs qemu-io on the export, fails on any error output.
qio() {
    local name=$1; shift
    qemu-io -f raw "$URI" "$@" >"$T/$name.qio" 2>&1 ||
        { cat "$T/$name.qio"; fail "qemu-io $name exited with status $?"; }
    if grep -Eiq 'fail|error|mismatch|not supported' "$T/$name.qio"; then
        cat "$T/$name.qio"; fail "qemu-io $name reported an error"
    fi
}
K=1024; M=$((1024 * 1024))

qio write \
    -c "write -P 0xab 0 1M" \
    -c "write -P 0xcd 1M 1M" \
    -c "write -f -P 0x33 $((6 * M)) 64k" \
    -c "write -P 0x44 $((7 * M + 1)) 3000" \
    -c "write -P 0xee 2M 1M" \
    -c "write -z 2M 1M" \
    -c "write -P 0x77 3M 1M" \
    -c "discard 3M 1M" \
    -c "flush"
# aio bursts: 64 writes of 64 KiB in flight at once.
args=()
for i in $(seq 0 63); do
    args+=(-c "aio_write -P $((i + 1)) $((8 * M + i * 64 * K)) 64k")
done
qio aio "${args[@]}" -c "aio_flush"

# Verification in a new connection: nothing was only in a client cache.
args=()
for i in $(seq 0 63); do
    args+=(-c "read -P $((i + 1)) $((8 * M + i * 64 * K)) 64k")
done
qio verify \
    -c "read -P 0xab 0 1M" \
    -c "read -P 0xcd 1M 1M" \
    -c "read -P 0 2M 1M" \
    -c "read -P 0 3M 1M" \
    -c "read -P 0x33 $((6 * M)) 64k" \
    -c "read -P 0x44 $((7 * M + 1)) 3000" \
    "${args[@]}"
# The check must be able to fail: a wrong pattern is reported.
if qemu-io -f raw "$URI" -c "read -P 0x99 0 4k" >"$T/neg.qio" 2>&1 &&
   ! grep -q 'Pattern verification failed' "$T/neg.qio"; then
    fail "qemu-io did not notice a wrong pattern; this test cannot fail"
fi
# And against the file itself.
cmp -s -n $M "$T/export.img" <(head -c $M /dev/zero | tr '\0' '\253') ||
    fail "file does not hold the 0xab pattern at 0"

# qemu-img convert (qcow2 source, 8 coroutines, out-of-order writes) into
# the export; zero runs become WRITE_ZEROES.
head -c $((40 * M)) /dev/urandom >"$T/src.img"
truncate -s $SIZE "$T/src.img"
qemu-img convert -f raw -O qcow2 "$T/src.img" "$T/src.qcow2" ||
    fail "qemu-img convert to qcow2"
qemu-img convert -n -m 8 -W -f qcow2 -O raw "$T/src.qcow2" "$URI" ||
    fail "qemu-img convert into the export"
qemu-img compare -f qcow2 -F raw "$T/src.qcow2" "$URI" ||
    fail "qemu-img compare: export differs from the source"
cmp "$T/src.img" "$T/export.img" || fail "export file differs from the source"

kill "$SRVPID"
wait "$SRVPID" || fail "server exited with status $?"
echo PASS
