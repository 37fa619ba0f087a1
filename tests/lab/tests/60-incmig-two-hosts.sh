#!/bin/bash
# 60-incmig-two-hosts: `xl-incmig migrate` of the writing test guest on a
# local disk (a file in dom0 1, never shared) from host 1 to host 2 over
# ssh on the hosts' private link, then back to host 1: the mission's case.
# Each way: PUSH with blkback's bitmap, libxl's memory pre-copy inside
# incmig's stream, stop-and-copy of the bitmap, PULL through the kernel's
# NBD client and device-mapper, then incmig leaves the I/O path.  After
# each trip: CHECK OK on the new host, the domain runs under its own name
# there and nowhere else, its disk is the destination volume (dm on a loop
# device of it, no NBD), the figures are printed.  After the trip back,
# host 2's incmig devices are gone with the domain.  Plain `xl migrate` of
# the same kind of guest between the same hosts is test 30, in the same
# `lab.sh check` run: compare the heartbeat gaps there.
. "$(dirname "$0")/common.sh"
needhost 1 --two; needhost 2 --two
KO=$LAB/out/xen-blkback-incmig.ko
[ -f "$LAB/out/blkback.failed" ] && fail "incmig's xen-blkback was not built: $(cat "$LAB/out/blkback.failed")"
[ -f "$KO" ] || fail "$KO missing: the lab's blkback step did not run (lab.sh build)"
g=im2 D=/root/lab/incmig
# scrub H: no domain, receiver, incmig dm or loop device, volume left on H
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
# --timeout 120: under TCG on a loaded machine the receiver's preparation
# (volume, nbd and dm modules, libxl) took over the default 30 s
hssh 1 "truncate -s $SIZE $D/src.img" || fail "source volume"
hssh 1 "/root/lab/labguest.sh start $g $D/src.img" || fail "guest start"
lg 2 watch $g
sleep 5
c=$(lg 1 check $g) || fail "before migrate: $c"

# trip FROM TO VOLUME: migrate over ssh, check the guest and its disk on TO
trip() {
	local from=$1 to=$2 vol=$3 out=$LAB/logs/60-migrate-$1to$2.out t0 t1
	t0=$(now)
	hssh $from "xl-incmig migrate --no-progress --timeout 120 --json $D/report.json --dest-target xen \
		--dest-root $D/dst --dest-disk xvda=$vol $g xen$to" >"$out" 2>&1 || {
		rc=$?; cat "$out"; fail "xl-incmig migrate $from->$to ($(rcwhy $rc))"; }
	t1=$(now)
	cat "$out"
	local list=$(hssh $to "xl list") lsrc=$(hssh $from "xl list")
	echo "$list" | grep -q "^$g " || fail "domain $g not running on host $to after the migration: $list"
	echo "$list$lsrc" | grep -q -- "--migratedaway\|--incoming" && fail "a source or incoming domain is left: $list $lsrc"
	echo "$lsrc" | grep -q "^$g " && fail "domain $g still on host $from"
	sleep 5
	c=$(lg $to check $g) || fail "on host $to: $c"
	local tbl dev loop mm
	tbl=$(hssh $to "dmsetup table | grep '^incmig-$g'") || fail "no incmig dm device on host $to: the disk is not on the destination volume"
	dev=$(echo "$tbl" | awk '{ print $5 }') loop=$(hssh $to "losetup -j $vol | cut -d: -f1 | head -n 1")
	mm=$(hssh $to "lsblk -dno MAJ:MIN $loop 2>/dev/null | tr -d ' '")
	[ -n "$loop" ] && [ "$dev" = "$mm" ] || fail "host $to: the destination volume is not under the guest: dm on $dev, $vol on ${loop:-no loop} ($mm)"
	hssh $to "for n in /sys/block/nbd*/pid; do [ -e \$n ] && echo \$n; done" | grep -q . && fail "host $to: an NBD device is still connected"
	hssh $to "[ \$(stat -c %s $vol) = $SIZE ]" || fail "host $to: $vol missing or of the wrong size"
	local gap=$(hbgap $g "$t0" 1 2) r=$(hssh $from "cat $D/report.json")
	js() { echo "$r" | grep -o "\"$1\": *[0-9.e+-]*" | head -n 1 | sed 's/.*: *//'; }
	echo "RESULT trip=$from-$to incmig_total=$(el $t0 $t1)s downtime_ms=$(js downtime_ms) state_bytes=$(js state_bytes) state_s=$(js state_s) push_s=$(js push_s) push=$(js push) stopcopy=$(js stopcopy) pull_demand=$(js pull_demand) pull_bg=$(js pull_background) pull_s=$(js pull_s) dst_pull_s=$(js dst_pull_s) wire=$(js wire_bytes) demand_blocks=$(js demand_blocks) $gap check=\"$c\""
}
trip 1 2 $D/dst/xvda.img
trip 2 1 $D/dst/back.img
# host 2 let the domain go, and with it the devices incmig made there
hssh 2 "dmsetup ls | grep '^incmig-'" && fail "host 2 kept incmig's dm device after the domain left"
hssh 2 "losetup -j $D/dst/xvda.img" | grep -q . && fail "host 2 kept the loop device on $D/dst/xvda.img"
echo "RESULT host2_devices=released"
