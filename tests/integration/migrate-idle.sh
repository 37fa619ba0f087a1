#!/bin/bash
# migrate-idle.sh: an idle guest (reads only).  Every allocated block is
# pushed once, nothing is left for stop-and-copy, and the destination
# image equals the source byte for byte.
. "$(dirname "$0")/lib.sh"
mkimage "$T/src.img" 64 50
start_serve "$T/src.img"
start_guest 0
start_receiver
sleep 1
run_migrate || fail "migration failed"
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit after the guest left"
cmp "$T/src.img" "$T/dst.img" || fail "destination differs from the source"
verify_image "$T/dst.img"
alloc=$(json allocated_blocks)
pushed=$(json pushed_blocks)
[ "$pushed" -eq "$alloc" ] || fail "pushed $pushed blocks for $alloc allocated"
[ "$(json final_dirty_blocks)" -eq 0 ] || fail "an idle guest left dirty blocks"
# bytes on the wire within 2% of the allocated bytes
wire=$(json wire_bytes)
fcmp "$wire" "<=" "$alloc * 4096 * 1.02" || fail "wire $wire bytes for $alloc blocks"
echo "idle: $alloc blocks allocated, $wire bytes on the wire"
