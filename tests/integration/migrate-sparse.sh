#!/bin/bash
# migrate-sparse.sh: a 256 MiB image with 10% allocated.  Holes are not
# sent, zero blocks inside allocated extents go as zero markers, and the
# destination stays sparse.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 256 10
# an allocated but all-zero extent
dd if=/dev/zero of="$T/src.img" bs=1M seek=3 count=1 conv=notrunc status=none
cp --sparse=never "$T/src.img" "$T/tmp" && cp --sparse=always "$T/src.img" "$T/src.img.orig"
rm -f "$T/tmp"
start_serve "$T/src.img"
start_guest 0
start_receiver
run_migrate || fail "migration failed"
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
cmp "$T/src.img" "$T/dst.img" || fail "destination differs"
# the disk's share of the wire: all of it but the domain's state stream
state=$(grep -o '"state":[0-9]*' "$T/report.json" | head -n 1 | cut -d: -f2)
wire=$(( $(json wire_bytes) - state ))
[ "$state" -gt 0 ] || fail "no state stream in the report"
fcmp "$wire" "<" "$(( (256 << 20) * 15 / 100 ))" || fail "sent $wire bytes for a 10%-allocated 256 MiB disk"
du_src=$(du -k "$T/src.img" | cut -f1); du_dst=$(du -k "$T/dst.img" | cut -f1)
[ "$du_dst" -le $((du_src + 1024)) ] || fail "destination not sparse: $du_dst KiB vs $du_src KiB"
echo "sparse: $wire bytes on the wire, destination uses $du_dst KiB (source $du_src KiB)"
