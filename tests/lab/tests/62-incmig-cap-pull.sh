#!/bin/bash
# 62-incmig-cap-pull: `xl-incmig migrate` of the writing test guest on a
# local disk from host 1 to host 2 with a link cap below the guest's own
# write rate during PUSH: PUSH cannot converge, the migration goes on
# anyway and what the guest keeps writing reaches host 2 through the
# stop-and-copy bitmap and PULL.  CHECK OK on host 2 after.
#
# The cap is lifted (migrate-set-bandwidth max, through --control) once
# PUSH has ended: libxl's memory stream (about 136 MiB) shares the link,
# and at a cap below the guest's disk rate under TCG (tens of KiB/s) it
# would take hours.  --compress=off: the guest's blocks are text, which
# zstd shrinks a thousandfold, and the cap must bite on the blocks.
#
# Checks: the guest's write rate is measured first (blkback's wr_sect over
# 10 s) and the cap set to a third of it; PUSH ends for a reason other than
# "fits the downtime budget"; its rate on the wire stays within 1.25 x the
# cap; PULL moves every block of the stop-and-copy bitmap (on demand +
# background = final dirty); the domain runs on host 2 on its destination
# volume (dm over loop, no NBD); CHECK OK.
#
# What it cannot show under TCG: a non-empty stop-and-copy bitmap.  Once
# the cap is lifted, the dirty blocks also travel during libxl's memory
# pre-copy (about 85 s here, the link mostly idle while libxl produces
# pages), and the guest's ~65 KB/s is drained before the pause (lab run
# 2026-12-01: final_dirty=0).  The final bitmap's size is printed.  PULL
# after a cap that never lets PUSH catch up is the simulated suite's
# migrate-overcap; PULL on Xen is tests 50 and 60.
. "$(dirname "$0")/common.sh"
needhost 1 --two; needhost 2 --two
KO=$LAB/out/xen-blkback-incmig.ko
[ -f "$LAB/out/blkback.failed" ] && fail "incmig's xen-blkback was not built: $(cat "$LAB/out/blkback.failed")"
[ -f "$KO" ] || fail "$KO missing: the lab's blkback step did not run (lab.sh build)"
g=im6 D=/root/lab/incmig
scrub() {
	hssh $1 "for d in \$(xl list | awk 'NR > 2 { print \$1 }'); do xl destroy \$d; done
		pkill -f '[x]l-incmig migrate' ; sleep 1
		for m in \$(dmsetup ls 2>/dev/null | awk '/^incmig-/ { print \$1 }'); do dmsetup remove \$m; done
		losetup -D; rm -rf $D" >/dev/null 2>&1
}
for h in 1 2; do
	scrub $h
	"$LABSRC/lab.sh" deploy $h || fail "deploy: incmig could not be built or installed in dom0 $h"
	hssh $h 'cat >/root/lab/xen-blkback-incmig.ko' <"$KO" || fail "push module to host $h"
	m=$(hssh $h /root/lab/blkbitmap.sh load-module /root/lab/xen-blkback-incmig.ko) || fail "load module on host $h: $m"
	hssh $h "rm -rf $D && mkdir -p $D/dst" || fail "host $h: $D"
done
cleanup() {
	for h in 1 2; do
		scrub $h
		hssh $h /root/lab/blkbitmap.sh stock-module >&2
	done
}
trap cleanup EXIT
SIZE=67108864
hssh 1 "truncate -s $SIZE $D/src.img" || fail "source volume"
hssh 1 "/root/lab/labguest.sh start $g $D/src.img" || fail "guest start"
lg 2 watch $g
sleep 5
c=$(lg 1 check $g) || fail "before migrate: $c"

# the guest's write rate, bytes/s, from its VBD's sector count over 10 s
wsect() { hssh 1 "cat /sys/bus/xen-backend/devices/vbd-\$(xl domid $g)-*/statistics/wr_sect | head -n 1"; }
s0=$(wsect) && t0=$(now) && sleep 10 && s1=$(wsect) && t1=$(now) || fail "no write statistics for $g's VBD"
rate=$(echo "($s1 - $s0) * 512 / ($t1 - $t0)" | bc)
cap=$(( rate / 3 ))
echo "RESULT guest_write_Bps=$rate cap_Bps=$cap"
[ "$cap" -ge 4096 ] || fail "the guest writes only $rate bytes/s: a cap below it is under migrate's floor of 4 KiB/s"

T0=$(now)
hssh 1 "rm -f $D/m.log; setsid sh -c 'xl-incmig migrate --no-progress --timeout 120 --compress=off \
	--bandwidth $cap --control $D/ctl --json $D/report.json --dest-target xen --dest-root $D/dst \
	--dest-disk xvda=$D/dst/xvda.img $g xen2 >$D/m.log 2>&1; echo rc=\$? >>$D/m.log' </dev/null >/dev/null 2>&1 &"
# waitlog PATTERN SECS
waitlog() {
	local i
	for i in $(seq 1 $(($2 * 2))); do
		hssh 1 "grep -q -- \"$1\" $D/m.log" && return 0
		sleep 0.5
	done
	hssh 1 "cat $D/m.log"; fail "no '$1' within $2 s"
}
waitlog 'PUSH converged\|^rc=' 1500
why=$(hssh 1 "grep -o 'PUSH converged.*' $D/m.log")
s=$(hssh 1 "xl-incmig migrate-set-bandwidth $D/ctl max") || { hssh 1 "cat $D/m.log"; fail "migrate-set-bandwidth max: $s"; }
echo "PUSH ended: $why; cap lifted: $s"
waitlog '^rc=' 1500
T1=$(now)
out=$(hssh 1 "cat $D/m.log"); echo "$out" >"$LAB/logs/62-migrate.log"; echo "$out"
echo "$out" | grep -q '^rc=0' || fail "the capped migration failed"
case $why in *"fits the downtime budget"*) fail "PUSH converged under a cap of a third of the guest's rate: $why" ;; esac

r=$(hssh 1 "cat $D/report.json")
js() { echo "$r" | grep -o "\"$1\": *[0-9.e+-]*" | head -n 1 | sed 's/.*: *//'; }
push=$(js push) push_s=$(js push_s) fd=$(js final_dirty_blocks) dm=$(js demand_blocks) bg=$(js background_blocks)
prate=$(echo "$push / $push_s" | bc)
[ "$(echo "$prate <= $cap * 1.25" | bc)" = 1 ] || fail "PUSH ran at $prate bytes/s under a cap of $cap"
[ -n "$fd" ] || fail "no final_dirty_blocks in the report"
[ $(( dm + bg )) = "$fd" ] || fail "PULL moved $dm on demand + $bg in the background, the bitmap had $fd"

list=$(hssh 2 "xl list") lsrc=$(hssh 1 "xl list")
echo "$list" | grep -q "^$g " || fail "domain $g not running on host 2: $list"
echo "$lsrc" | grep -q "^$g \|--migratedaway" && fail "domain $g left on host 1: $lsrc"
sleep 5
c=$(lg 2 check $g) || fail "on host 2: $c"
tbl=$(hssh 2 "dmsetup table | grep '^incmig-$g'") || fail "no incmig dm device on host 2"
loop=$(hssh 2 "losetup -j $D/dst/xvda.img | cut -d: -f1 | head -n 1")
mm=$(hssh 2 "lsblk -dno MAJ:MIN $loop 2>/dev/null | tr -d ' '")
[ -n "$loop" ] && [ "$(echo "$tbl" | awk '{ print $5 }')" = "$mm" ] || fail "host 2: the destination volume is not under the guest: $tbl / ${loop:-no loop}"
hssh 2 "for n in /sys/block/nbd*/pid; do [ -e \$n ] && echo \$n; done" | grep -q . && fail "host 2: an NBD device is still connected"
echo "RESULT total=$(el $T0 $T1)s cap=$cap push_Bps=$prate push=$push push_s=$push_s downtime_ms=$(js downtime_ms) final_dirty=$fd demand=$dm background=$bg dst_pull_s=$(js dst_pull_s) $(hbgap $g "$T0" 1 2) check=\"$c\""
