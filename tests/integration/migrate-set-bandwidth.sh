#!/bin/bash
# migrate-set-bandwidth.sh: the link cap of a running migration changes
# through its control socket (migrate --control, migrate-set-bandwidth),
# and the rate measured on the link follows it: 2 s at 4 MB/s, then 2 s at
# 16 MB/s must show a ratio near 4 (accepted: 2 to 6, so that a loaded
# machine does not make it flaky).  Also: the progress line shows the new
# cap, and bad requests are refused with a clear error.
. "$(dirname "$0")/lib.sh"
requires script
mkimage "$T/src.img" 96 100
start_serve "$T/src.img"
start_guest 0
start_receiver
CTL=$T/mig.ctl
now() { date +%s.%N; }
# sent RATE: sets the cap, prints the bytes the migration has sent so far
sent() {
    "$XL_INCMIG" migrate-set-bandwidth "$CTL" "$1" >"$T/set.out" 2>"$T/set.log" ||
        fail "migrate-set-bandwidth $1: $(cat "$T/set.log")"
    sed -n 's/.*, \([0-9]*\) bytes sent$/\1/p' "$T/set.out"
}
script -qec "'$XL_INCMIG' migrate -s '' --bandwidth 4M --control '$CTL' \
    sim:$SRC_CTL 127.0.0.1:$PORT" "$T/typescript" >/dev/null 2>&1 &
MIG=$!
wait_for "[ -S '$CTL' ]" 20 || fail "no control socket"
sleep 0.5
t0=$(now); b0=$(sent 4000000)
sleep 2
t1=$(now); b1=$(sent 16000000)
sleep 2
t2=$(now); b2=$(sent 16000000)
r1=$(awk -v a="$b0" -v b="$b1" -v s="$t0" -v e="$t1" 'BEGIN { print (b - a) / (e - s) }')
r2=$(awk -v a="$b1" -v b="$b2" -v s="$t1" -v e="$t2" 'BEGIN { print (b - a) / (e - s) }')
ratio=$(awk -v a="$r1" -v b="$r2" 'BEGIN { print (a > 0) ? b / a : 0 }')
echo "rate at 4M: $r1 B/s, at 16M: $r2 B/s, ratio $ratio"
fcmp "$r1" '<=' 5000000 || fail "rate $r1 B/s above the 4 MB/s cap"
fcmp "$ratio" '>=' 2 && fcmp "$ratio" '<=' 6 || fail "rate ratio $ratio after 4M -> 16M"
sent max >/dev/null   # no cap: the rest goes at once
# bad requests: a rate below 4K, garbage, a socket nobody serves
"$XL_INCMIG" migrate-set-bandwidth "$CTL" 12 >/dev/null 2>"$T/bad.log" &&
    fail "a cap of 12 bytes/s was accepted"
grep -q "bad RATE" "$T/bad.log" || fail "no clear error: $(cat "$T/bad.log")"
"$XL_INCMIG" migrate-set-bandwidth "$T/nothing.ctl" 8M >/dev/null 2>"$T/bad.log" &&
    fail "a socket without a migration was accepted"
grep -q "no migration answers" "$T/bad.log" || fail "no clear error: $(cat "$T/bad.log")"
wait "$MIG" || fail "migration failed"
[ ! -e "$CTL" ] || fail "control socket left behind"
tr '\r' '\n' <"$T/typescript" | grep -aq "(cap 16.0 MB/s)" ||
    fail "the progress line never showed the new cap"
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
verify_image "$T/dst.img"
echo PASS
