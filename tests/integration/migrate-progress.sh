#!/bin/bash
# migrate-progress.sh: on a terminal, migrate shows a progress line with
# the amount copied, the rate and an ETA; without a terminal it does not.
. "$(dirname "$0")/lib.sh"
requires script
mkimage "$T/src.img" 32 100
start_serve "$T/src.img"
start_guest 0
start_receiver
# under script(1) stderr is a terminal
script -qec "'$XL_INCMIG' migrate -s '' --bandwidth 8M sim:$SRC_CTL 127.0.0.1:$PORT" \
    "$T/typescript" >/dev/null 2>&1 || fail "migration under a terminal failed"
grep -aq "PUSH round 0: [0-9]*/32 MiB .* MB/s (cap 8.4 MB/s)  ETA [0-9]*s" "$T/typescript" ||
    fail "no progress line: $(tr '\r' '\n' <"$T/typescript" | head -5)"
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
# and none when stderr is not a terminal
rm -f "$T/dst.img" "$T/journal"
start_serve "$T/src.img"
start_guest 0
start_receiver
run_migrate --bandwidth 8M || fail "second migration failed"
grep -q "ETA" "$T/migrate.log" && fail "progress line written to a non-terminal"
stop_guest
echo "progress: $(tr '\r' '\n' <"$T/typescript" | grep -a ETA | tail -1)"
