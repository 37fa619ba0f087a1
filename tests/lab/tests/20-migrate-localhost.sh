#!/bin/bash
# 20-migrate-localhost: plain `xl migrate` of the test guest to localhost on
# host 1 (ssh to itself); the journal verifies after it; downtime = heartbeat gap.
. "$(dirname "$0")/common.sh"
needhost 1
g=ml
lg 1 start $g /dev/vdb --wipe || fail "guest start"
sleep 5
c=$(lg 1 check $g) || fail "before migrate: $c"
t0=$(now); hssh 1 "xl migrate $g localhost" >"$LAB/logs/20-xl-migrate.out" 2>&1 || { rc=$?; cat "$LAB/logs/20-xl-migrate.out"; fail "xl migrate ($(rcwhy $rc))"; }
t1=$(now)
sleep 5
c=$(lg 1 check $g) || fail "after migrate: $c"
gap=$(hbgap $g "$t0" 1)
hssh 1 "xl destroy $g"
echo "RESULT migrate_total=$(el $t0 $t1)s $gap check=\"$c\""
