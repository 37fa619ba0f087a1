#!/bin/bash
# fail-records.sh: hostile or broken wire input on either side.
#
# Source side faked (badpeer source MODE) against a real receiver: for each
# corrupted, truncated, oversized, unknown, out-of-range, malformed or
# out-of-order record, and a wrong magic or version, the receiver exits 1
# within a few seconds, its log names what failed, it tells the source
# with an ERROR record when the link still works, and its partial copy and
# staged NBD socket are gone.
#
# Receiver side faked (badpeer receiver MODE) against a real source with a
# writing guest: migrate exits 1 naming the failure, and the guest keeps
# running on its source export, which verifies block by block afterwards.
. "$(dirname "$0")/lib.sh"
BADPEER=$TESTS_BUILDDIR/integration/badpeer
[ -x "$BADPEER" ] || { echo "SKIP: $BADPEER not built"; exit 77; }

# ---- a fake source against the real receiver -----------------------------

# src_case MODE ERE: the receiver's log must match ERE (grep -E -i).  A
# failed case is recorded and the others still run (see the end).
FAILED=""
miss() { echo "FAIL: $*" >&2; FAILED="$FAILED
  $*"; }
src_case() {
    local mode=$1 pat=$2 port img sock log pid rc=0 st=0
    port=$(free_port)
    img=$T/dst-$mode.img sock=$T/dst-$mode.sock log=$T/recv-$mode.log
    bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$port" --image "$img" \
        --nbd "unix:$sock" --exit-when-done 2>"$log"
    pid=$LASTPID
    wait_for "grep -q 'waiting for the source' '$log'" 10 ||
        fail "$mode: receiver did not start"
    timeout 20 "$BADPEER" source "$mode" "127.0.0.1:$port" \
        >"$T/bp-$mode.log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || { miss "$mode: badpeer could not play its part (status $rc)"; return 0; }
    wait_for "! kill -0 $pid" 5 ||
        { miss "$mode: receiver still running 5 s after the fault"; return 0; }
    wait "$pid" || st=$?
    [ "$st" = 1 ] || miss "$mode: receiver exited with status $st, expected 1"
    grep -Eiq "$pat" "$log" ||
        miss "$mode: receiver log does not say what failed (want /$pat/): $(grep error "$log" | head -n 3)"
    [ ! -e "$img" ] || miss "$mode: partial copy $img left behind"
    [ ! -e "$sock" ] || miss "$mode: staged NBD socket $sock left behind"
    if [ "$mode" != truncate ]; then
        grep -q '^peer ERROR' "$T/bp-$mode.log" ||
            miss "$mode: the receiver did not send an ERROR record to the source"
    fi
    echo "source $mode -> $(grep -Eio "$pat" "$log" | head -n 1)"
}

src_case crc      'record at stream offset [0-9]+ \(BLOCKS, [0-9]+ bytes\) checksum mismatch'
src_case truncate 'truncated record'
src_case oversize 'claims a 4194305-byte body, over the 4194304-byte limit'
src_case version  'peer speaks incmig stream version 2, this side speaks version 1'
src_case magic    'not an incmig stream \(starts with "SSH-2.0-"\)'
src_case unknown  'unknown mandatory record type 99'
src_case range    'blocks 4095\+2 beyond disk 0'
src_case bitmap   'bitmap chunk at 0: empty run'
# a record valid in itself but not in this state must be named
src_case order    '(unexpected|out of order|wrong state|not expected|before SUSPEND)[^\n]*\bGO\b|\bGO\b[^\n]*(unexpected|out of order|wrong state|not expected|before SUSPEND)'
# the destination's state machine (issue 9): the state stream, the bitmap
# chunks and READY are checked, not only each record's format
src_case nocap-state   'XEN_STREAM record, but no state stream was negotiated'
src_case suspend-early 'SUSPEND before the end of the state stream'
src_case bitmap-order  'BITMAP chunk of disk 0 for bits 100\+100: expected the chunk at bit 0'
src_case ready-early   'READY before the stop-and-copy bitmap of disk xvda was complete'
src_case bitmap-late   'unexpected BITMAP record in state READY'
# GO is taken only after READY (issue 11): the bitmap alone is not enough
src_case go-noready    'unexpected GO record in state PAUSED'

# ---- a fake receiver against the real source -----------------------------

mkimage "$T/src.img" 32 50
start_serve "$T/src.img"
start_guest 5M
sleep 1

# dst_case MODE ERE: migrate.log must match ERE
dst_case() {
    local mode=$1 pat=$2 port rc=0 bp h1 h2
    port=$(free_port)
    bg "$BADPEER" receiver "$mode" "$port" >"$T/bpr-$mode.log" 2>&1
    bp=$LASTPID
    wait_for "grep -q ready '$T/bpr-$mode.log'" 10 || fail "$mode: badpeer did not start"
    MIG_HOST=127.0.0.1:$port
    timeout 30 "$XL_INCMIG" migrate -s "" --no-progress "sim:$SRC_CTL" "$MIG_HOST" \
        >"$T/migrate-$mode.out" 2>"$T/migrate-$mode.log" || rc=$?
    [ "$rc" = 1 ] || fail "$mode: migrate exited with status $rc, expected 1"
    grep -Eiq "$pat" "$T/migrate-$mode.log" ||
        fail "$mode: migrate log does not say what failed (want /$pat/): $(cat "$T/migrate-$mode.log")"
    grep -q 'failed before the point of no return' "$T/migrate-$mode.log" ||
        fail "$mode: migrate does not say the guest stays on the source"
    wait_for "! kill -0 $bp" 10 || fail "$mode: badpeer still running"
    kill -0 "$SERVE_PID" 2>/dev/null || fail "$mode: the source export died"
    kill -0 "$GUEST_PID" 2>/dev/null || fail "$mode: the guest died"
    # the guest still writes on the source (its journal checkpoints each second)
    h1=$(md5sum <"$T/journal")
    wait_for "[ \"\$(md5sum <'$T/journal')\" != '$h1' ]" 5 ||
        fail "$mode: the guest stopped writing after the failed migration"
    echo "ok: receiver $mode -> $(grep -Eio "$pat" "$T/migrate-$mode.log" | head -n 1)"
}

dst_case version           'peer speaks incmig stream version 2, this side speaks version 1'
dst_case nack              'cannot take disk 0[^:]*: test: no space'
dst_case corrupt           'HELLO[^\n]*checksum mismatch|checksum mismatch[^\n]*HELLO'
dst_case close-during-push 'connection to peer lost|connection closed by peer|connection reset'
# the source's state table (issue 11): READY is not a ROUND echo
dst_case ready-in-push     'unexpected READY record from the receiver in state PUSH'

sleep 1
stop_guest
grep -q '"reconnects": 0' "$T/guest.json" ||
    fail "the guest lost its source export: $(cat "$T/guest.json")"
[ "$(json writes "$T/guest.json")" -gt 0 ] || fail "the guest wrote nothing"
verify_image "$T/src.img"
[ -z "$FAILED" ] || fail "fake-source cases failed:$FAILED"
echo "fail-records: every fault named; source verified: $(tail -n 1 "$T/verify.log")"
