#!/bin/bash
# 50-incmig-localhost: `xl-incmig migrate` of the writing test guest on a
# local disk (a file in dom0) to localhost on host 1, through incmig's own
# build (lab.sh deploy) and its patched xen-blkback: PUSH with blkback's
# bitmap, libxl's memory pre-copy inside incmig's stream, stop-and-copy of
# the bitmap, PULL through the kernel's NBD client and device-mapper, then
# incmig leaves the I/O path.  After it: CHECK OK (every block the guest
# wrote verifies), the domain runs under its own name, the source domain is
# gone, the disk is the destination volume (dm table on it, no NBD), and
# the figures are printed.  Beside it, in the same run, plain `xl migrate`
# of the same kind of guest is test 20: compare the gaps there.
. "$(dirname "$0")/common.sh"
needhost 1
KO=$LAB/out/xen-blkback-incmig.ko
[ -f "$LAB/out/blkback.failed" ] && fail "incmig's xen-blkback was not built: $(cat "$LAB/out/blkback.failed")"
[ -f "$KO" ] || fail "$KO missing: the lab's blkback step did not run (lab.sh build)"
"$LABSRC/lab.sh" deploy 1 || fail "deploy: incmig could not be built or installed in dom0"
hssh 1 'command -v xl-incmig' >/dev/null || fail "xl-incmig not installed in dom0"
g=im D=/root/lab/incmig
left=$(hssh 1 "xl list | awk 'NR > 2 { print \$1 }'" | tr '\n' ' ')
[ -n "$left" ] && { log "destroying leftovers: $left"; hssh 1 "for d in $left; do xl destroy \$d; done"; }
hssh 1 'cat >/root/lab/xen-blkback-incmig.ko' <"$KO" || fail "push module"
m=$(hssh 1 /root/lab/blkbitmap.sh load-module /root/lab/xen-blkback-incmig.ko) || fail "load module: $m"
cleanup() {
	hssh 1 "for d in \$(xl list | awk 'NR > 2 { print \$1 }'); do xl destroy \$d; done
		pkill -f '[x]l-incmig migrate-receive' ; sleep 1
		for m in \$(dmsetup ls 2>/dev/null | awk '/^incmig-/ { print \$1 }'); do dmsetup remove \$m; done
		losetup -D; rm -rf $D" >/dev/null 2>&1
	hssh 1 /root/lab/blkbitmap.sh stock-module >&2
}
trap cleanup EXIT
# a fresh, sparse file of zeroes: the guest formats it (no --wipe: its dd
# would cut the file to 2 MiB)
hssh 1 "rm -rf $D && mkdir -p $D/dst && truncate -s 64M $D/src.img" || fail "volumes"
hssh 1 "/root/lab/labguest.sh start $g $D/src.img" || fail "guest start"
sleep 5
c=$(lg 1 check $g) || fail "before migrate: $c"
PORT=7311
hssh 1 "setsid xl-incmig migrate-receive --target xen --listen 127.0.0.1:$PORT --exit-when-done \
	--root $D/dst --disk xvda=$D/dst/src.img >$D/receive.log 2>&1 </dev/null &" || fail "receiver"
sleep 1
t0=$(now)
hssh 1 "xl-incmig migrate -s '' --no-progress --json $D/report.json $g 127.0.0.1:$PORT" \
	>"$LAB/logs/50-migrate.out" 2>&1 || {
	cat "$LAB/logs/50-migrate.out"; hssh 1 "cat $D/receive.log" | tail -30; fail "xl-incmig migrate"; }
t1=$(now)
cat "$LAB/logs/50-migrate.out"
for i in $(seq 1 120); do hssh 1 "pgrep -f '[x]l-incmig migrate-receive' >/dev/null" || break; sleep 1; done
hssh 1 "cat $D/receive.log" >"$LAB/logs/50-receive.log"
hssh 1 "pgrep -f '[x]l-incmig migrate-receive' >/dev/null" && fail "the receiver is still running 120 s after the migration (still in the I/O path?)"
list=$(hssh 1 "xl list")
echo "$list" | grep -q "^$g " || fail "domain $g not running after the migration: $list"
echo "$list" | grep -q -- "--migratedaway\|--incoming" && fail "a source or incoming domain is left: $list"
sleep 5
c=$(lg 1 check $g) || fail "after migrate: $c"
# incmig left the I/O path: the domain's disk is the dm device, on a loop
# device of the destination volume, and no NBD device is connected
tbl=$(hssh 1 "dmsetup table | grep '^incmig-'") || fail "no incmig dm device: the domain's disk is not on the destination volume"
dev=$(echo "$tbl" | awk '{ print $5 }')
loop=$(hssh 1 "losetup -j $D/dst/src.img | cut -d: -f1 | head -n 1")
mm=$(hssh 1 "lsblk -dno MAJ:MIN $loop 2>/dev/null | tr -d ' '")
[ -n "$loop" ] && [ "$dev" = "$mm" ] || fail "the destination volume is not under the guest: dm on $dev, $D/dst/src.img on ${loop:-no loop} ($mm)"
hssh 1 "for n in /sys/block/nbd*/pid; do [ -e \$n ] && echo \$n; done" | grep -q . && fail "an NBD device is still connected"
# the destination volume holds what the guest wrote: the guest's own check
# (CHECK OK above) reads it through dm -> loop -> $D/dst/src.img; and the
# source domain and its disk are let go
hssh 1 "test -f $D/dst/src.img && [ \$(stat -c %s $D/dst/src.img) = 67108864 ]" || fail "destination volume missing or of the wrong size"
gap=$(hbgap $g "$t0" 1)
r=$(hssh 1 "cat $D/report.json")
js() { echo "$r" | grep -o "\"$1\": *[0-9.e+-]*" | head -n 1 | sed 's/.*: *//'; }
echo "RESULT incmig_total=$(el $t0 $t1)s downtime_ms=$(js downtime_ms) state_bytes=$(js state_bytes) wire=$(js wire_bytes) demand_blocks=$(js demand_blocks) $gap check=\"$c\""
