#!/bin/bash
# 30-migrate-two-hosts: `xl migrate` of the test guest from host 1 to host 2
# over ssh on the hosts' private link; the guest's disk is the same image on
# both (the shared-storage case); then back to host 1.  The journal verifies
# after each move; downtime = heartbeat gap across both hosts' console logs.
. "$(dirname "$0")/common.sh"
needhost 1 --two; needhost 2 --two
g=m2
lg 1 start $g /dev/vdb --wipe || fail "guest start"
lg 2 watch $g
sleep 5
t0=$(now); hssh 1 "xl migrate $g xen2" >"$LAB/logs/30-xl-migrate.out" 2>&1 || { rc=$?; cat "$LAB/logs/30-xl-migrate.out"; fail "xl migrate 1->2 ($(rcwhy $rc))"; }
t1=$(now)
sleep 5
c=$(lg 2 check $g) || fail "on host 2: $c"
gap=$(hbgap $g "$t0" 1 2)
echo "RESULT to_host2_total=$(el $t0 $t1)s $gap check=\"$c\""
t0=$(now); hssh 2 "xl migrate $g xen1" >>"$LAB/logs/30-xl-migrate.out" 2>&1 || { rc=$?; cat "$LAB/logs/30-xl-migrate.out"; fail "xl migrate 2->1 ($(rcwhy $rc))"; }
t1=$(now)
sleep 5
c=$(lg 1 check $g) || fail "back on host 1: $c"
gap=$(hbgap $g "$t0" 1 2)
hssh 1 "xl destroy $g"
echo "RESULT back_to_host1_total=$(el $t0 $t1)s $gap check=\"$c\""
