#!/bin/bash
# 10-save-restore: xl save + xl restore of the running test guest on host 1;
# the guest's disk and journal verify afterwards; downtime = heartbeat gap.
. "$(dirname "$0")/common.sh"
needhost 1
g=sr
lg 1 start $g /dev/vdb --wipe || fail "guest start"
sleep 5
t0=$(now); hssh 1 "xl save $g /root/lab/$g.save" || fail "xl save"
t1=$(now); hssh 1 "xl restore /root/lab/$g.save && rm -f /root/lab/$g.save" || fail "xl restore"
t2=$(now)
sleep 5
c=$(lg 1 check $g) || fail "after restore: $c"
gap=$(hbgap $g "$t0" 1)
hssh 1 "xl destroy $g"
echo "RESULT save=$(el $t0 $t1)s restore=$(el $t1 $t2)s $gap check=\"$c\""
