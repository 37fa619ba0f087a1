#!/bin/bash
# migrate-byhand.sh: xl-incmig(1) "BY HAND" with an external NBD client as
# the guest.  `serve` and `migrate-receive --listen` are started exactly as
# the man page says; the guest is a bash loop of qemu-io processes, each
# writing one numbered 4 KiB block with a recognisable pattern, first to
# the source socket and, when that fails, to the destination socket.  The
# client is served by the source until stop-and-copy and, once its
# connection to the source ends, carries on on the destination with nothing
# it wrote lost: every acknowledged block reads back (through the PULL
# gate) from the destination export, whose whole content equals the
# original image plus those writes, and so does the destination image file.
. "$(dirname "$0")/lib.sh"
requires qemu-io
requires nbdcopy
requires cmp

BS=4096
MIB=32
NBLK=$((MIB * 1024 * 1024 / BS))
mkimage "$T/disk.img" $MIB 50
SRC_SOCK=$T/src.sock SRC_CTL=$T/src.ctl DST_SOCK=$T/dst.sock
SRC_URI="nbd+unix:///?socket=$SRC_SOCK"
DST_URI="nbd+unix:///?socket=$DST_SOCK"
PORT=$(free_port)

# xl-incmig serve --nbd unix:/tmp/src.sock --control /tmp/src.ctl disk.img &
bg "$XL_INCMIG" serve --nbd "unix:$SRC_SOCK" --control "$SRC_CTL" "$T/disk.img" 2>"$T/serve.log"
SERVE_PID=$LASTPID
wait_for "[ -S '$SRC_CTL' ] && [ -S '$SRC_SOCK' ]" 20 || fail "serve did not start"
# xl-incmig migrate-receive --listen 127.0.0.1:7000 --image copy.img --nbd unix:/tmp/dst.sock &
bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$PORT" --image "$T/copy.img" \
    --nbd "unix:$DST_SOCK" 2>"$T/receive.log"
RECV_PID=$LASTPID
wait_for "grep -q 'waiting for the source' '$T/receive.log'" 20 || fail "receiver did not start"

# ---- the guest: one qemu-io per write ---------------------------------------
# Write number i goes to block (i * 613) mod NBLK (613 is odd: all distinct)
# with pattern i % 250 + 1.  A write is retried (source, then destination)
# until one of them acknowledges it, so no unacknowledged write can have
# landed anywhere with another pattern.  Each acknowledged write is logged
# as "I BLOCK PATTERN src|dst".
blk_of() { echo $(( ($1 * 613) % NBLK )); }
pat_of() { echo $(( $1 % 250 + 1 )); }
qwrite() { timeout 20 qemu-io -f raw "$1" -c "write -P $3 $(( $2 * BS )) $BS" >>"$T/client-io.log" 2>&1; }
client() {
    local i=0 b p tries
    while [ ! -e "$T/stop" ] && [ $i -lt $NBLK ]; do
        b=$(blk_of $i) p=$(pat_of $i) tries=0
        while :; do
            if qwrite "$SRC_URI" $b $p; then echo "$i $b $p src" >>"$T/acked"; break; fi
            if [ -S "$DST_SOCK" ] && qwrite "$DST_URI" $b $p; then
                echo "$i $b $p dst" >>"$T/acked"; break
            fi
            tries=$((tries + 1))
            [ $tries -ge 300 ] && { echo "write $i never acknowledged" >>"$T/client.log"; return 1; }
            sleep 0.1
        done
        i=$((i + 1))
    done
    echo "client done after $i writes" >>"$T/client.log"
}
: >"$T/acked"
bg client
CLIENT_PID=$LASTPID
n_src() { awk '$4 == "src"' "$T/acked" | wc -l; }
n_dst() { awk '$4 == "dst"' "$T/acked" | wc -l; }
wait_for "[ \$(n_src) -ge 10 ]" 20 || fail "the client could not write to the source: $(tail -3 "$T/client-io.log")"

# xl-incmig migrate -s "" sim:/tmp/src.ctl 127.0.0.1:7000  (capped: lasts seconds)
bg "$XL_INCMIG" migrate -s "" --bandwidth 4M --no-progress --json "$T/report.json" \
    "sim:$SRC_CTL" "127.0.0.1:$PORT" >"$T/migrate.out" 2>"$T/migrate.log"
MIG_PID=$LASTPID
wait "$MIG_PID" || fail "migration failed"
wait_for "[ \$(n_dst) -ge 20 ]" 30 || fail "the client did not carry on on the destination ($(n_dst) writes there): $(tail -3 "$T/client-io.log")"
touch "$T/stop"
wait "$CLIENT_PID" || fail "client loop failed: $(cat "$T/client.log")"
kill -0 "$RECV_PID" 2>/dev/null || fail "the receiver exited (it serves until a signal without --exit-when-done)"

# ---- checks ------------------------------------------------------------------
NS=$(n_src) ND=$(n_dst)
[ "$NS" -gt 0 ] && [ "$ND" -gt 0 ] || fail "writes: $NS to the source, $ND to the destination"
# Once the client has moved to the destination it never gets a write
# acknowledged by the source again (that write would be lost).
awk '$4 == "dst" { d = 1 } $4 == "src" && d { bad = 1 } END { exit bad }' "$T/acked" ||
    fail "the source acknowledged a write after one had gone to the destination"
# Writes during the migration (pushed in rounds, or left for PULL) all made it.
grep -q 'GO' "$T/migrate.log" || fail "no GO in the migrate log"
[ "$(json rounds)" -ge 1 ] || fail "no PUSH rounds in the report"

# Every acknowledged block, read back through the destination's export.
# Batch reads into few qemu-io runs (one connection each).
bad=0 args=()
while read -r i b p where; do
    args+=(-c "read -P $p $((b * BS)) $BS")
    if [ ${#args[@]} -ge 200 ]; then
        qemu-io -f raw -r "$DST_URI" "${args[@]}" >>"$T/readback.log" 2>&1 || bad=1
        args=()
    fi
done <"$T/acked"
[ ${#args[@]} -eq 0 ] || qemu-io -f raw -r "$DST_URI" "${args[@]}" >>"$T/readback.log" 2>&1 || bad=1
[ $bad = 0 ] && ! grep -q 'verification failed\|failed' "$T/readback.log" ||
    fail "acknowledged writes missing on the destination: $(grep -m3 -i 'failed' "$T/readback.log")"

# The expected disk: the original plus the acknowledged writes.
cp "$T/disk.img.orig" "$T/expected.img"
while read -r i b p where; do
    head -c $BS /dev/zero | tr '\0' "\\$(printf %03o "$p")" |
        dd of="$T/expected.img" bs=$BS seek="$b" conv=notrunc status=none
done <"$T/acked"
# Sanity of the expectation itself: the source now differs from it only if
# writes went to the destination.
cmp -s "$T/disk.img" "$T/expected.img" && fail "source image already holds the destination's writes?"

# The whole disk as the destination export serves it.
nbdcopy "$DST_URI" "$T/dst-export.img" || fail "nbdcopy from the destination export failed"
cmp "$T/expected.img" "$T/dst-export.img" >"$T/cmp.log" 2>&1 ||
    fail "destination export differs from original + acknowledged writes: $(cat "$T/cmp.log")"

# And the image file itself once the receiver has stopped.
kill -TERM "$RECV_PID"
wait "$RECV_PID" 2>/dev/null || true
cmp "$T/expected.img" "$T/copy.img" >"$T/cmp.log" 2>&1 ||
    fail "destination image file differs from original + acknowledged writes: $(cat "$T/cmp.log")"
echo "byhand: $NS writes on the source, $ND on the destination, downtime $(json downtime_ms) ms, rounds $(json rounds)"
