#!/bin/bash
# 65-incmig-lvm-shared: `xl-incmig migrate` to localhost on host 1 with LVM
# logical volumes on both sides and a disk on shared storage: the writing
# test guest runs on an LV (xvda) of a volume group made on a loop file in
# dom0 (phy: on the source, PUSH reads the LV), with a second disk xvdb
# (a file, block-attached) that both "hosts" reach: migrate --shared-disk
# xvdb, and the receiver maps --disk xvda=lvm:VG/LV (an LV it creates)
# --disk xvdb=shared.  Five cases, the first four failures before GO:
#   taken     the LV already exists: refused, the LV left as it was (its
#             marker still there)
#   no-space  a volume group smaller than the disk: refused saying so, no
#             LV left
#   unshared  the receiver does not map xvdb as shared: the restore is
#             refused naming xvdb, and the LV it created is removed
#   push-kill the receiver stopped (SIGTERM) during PUSH, after it created
#             the LV: the LV it created is removed
#   lvm       the migration: CHECK OK, the domain under its own name, its
#             xvda's dm device's table on the LV itself (no loop device, no
#             NBD), so the guest's check read what it wrote from the LV;
#             xvdb attached from the same file, untouched by incmig
# After each failure the guest runs on the source under its own name,
# unpaused, CHECK OK, and nothing of incmig is left (no incoming domain,
# dm device, NBD connection).
. "$(dirname "$0")/common.sh"
needhost 1
KO=$LAB/out/xen-blkback-incmig.ko
[ -f "$LAB/out/blkback.failed" ] && fail "incmig's xen-blkback was not built: $(cat "$LAB/out/blkback.failed")"
[ -f "$KO" ] || fail "$KO missing: the lab's blkback step did not run (lab.sh build)"
hssh 1 'command -v lvcreate >/dev/null' || fail "lvm2 is not installed in dom0 (build-rootfs.sh installs it: rebuild the rootfs)"
"$LABSRC/lab.sh" deploy 1 || fail "deploy: incmig could not be built or installed in dom0"
g=im55 D=/root/lab/incmig55 VG=lab55vg SVG=lab55small PORT=7355 SIZE=67108864
# scrub: no domain, receiver, incmig dm device, test VG or loop device left
scrub() {
	hssh 1 "for d in \$(xl list | awk 'NR > 2 { print \$1 }'); do xl destroy \$d; done
		pkill -f '[x]l-incmig migrate' ; sleep 1
		for m in \$(dmsetup ls 2>/dev/null | awk '/^incmig-/ { print \$1 }'); do dmsetup remove \$m; done
		vgremove -f -y $VG $SVG
		for f in $D/pv.img $D/small.img; do
			for l in \$(losetup -j \$f 2>/dev/null | cut -d: -f1); do pvremove -ff -y \$l; losetup -d \$l; done
		done
		rm -rf $D" >/dev/null 2>&1
}
scrub
hssh 1 'cat >/root/lab/xen-blkback-incmig.ko' <"$KO" || fail "push module"
m=$(hssh 1 /root/lab/blkbitmap.sh load-module /root/lab/xen-blkback-incmig.ko) || fail "load module: $m"
cleanup() {
	scrub
	hssh 1 /root/lab/blkbitmap.sh stock-module >&2
}
trap cleanup EXIT
# mkvg NAME FILE MiB: a volume group on a loop device of a sparse file
mkvg() {
	hssh 1 "truncate -s $3M $2 && l=\$(losetup -f --show $2) && pvcreate -q -y \$l && vgcreate -q -y $1 \$l" \
		|| fail "volume group $1 on $2"
}
hssh 1 "mkdir -p $D" || fail "$D"
mkvg $VG $D/pv.img 256
mkvg $SVG $D/small.img 32
# the source disk: an LV, its node made whether or not udev runs; --wipe
# zeroes its start (the guest formats it)
hssh 1 "lvcreate -q -y --name src --size ${SIZE}b $VG && dmsetup mknodes $VG-src && test -b /dev/mapper/$VG-src" \
	|| fail "source LV $VG/src"
hssh 1 "LABGUEST_EXTRA= /root/lab/labguest.sh start $g /dev/mapper/$VG-src --wipe" || fail "guest start on $VG/src"
hssh 1 "truncate -s 16M $D/shared.img && xl block-attach $g 'format=raw, vdev=xvdb, access=rw, target=$D/shared.img'" \
	|| fail "attach the shared disk xvdb"
sleep 5
c=$(lg 1 check $g) || fail "before migrate: $c"

# receiver CASE LV [MORE...]: a receiver for the guest's xvda into lvm:LV
# (and MORE mapping options; default: --disk xvdb=shared), log in
# $D/CASE.recv
receiver() {
	local n=$1 lv=$2; shift 2
	[ $# -eq 0 ] && set -- --disk xvdb=shared
	hssh 1 "setsid xl-incmig migrate-receive --target xen --listen 127.0.0.1:$PORT --exit-when-done \
		--timeout 120 --disk xvda=lvm:$lv $* >$D/$n.recv 2>&1 </dev/null &" || fail "$n: receiver"
	sleep 1
}
# migrate CASE [OPTIONS...]: in the background, xvdb shared, output and rc=
# in $D/CASE.log
migrate() {
	local n=$1; shift
	hssh 1 "rm -f $D/$n.log; setsid sh -c 'xl-incmig migrate -s \"\" --no-progress --timeout 120 --shared-disk xvdb $* \
		$g 127.0.0.1:$PORT >$D/$n.log 2>&1; echo rc=\$? >>$D/$n.log' </dev/null >/dev/null 2>&1 &"
}
waitlog() {
	local i
	for i in $(seq 1 $(($3 * 2))); do
		hssh 1 "grep -q -- \"$2\" $D/$1.log" && return 0
		sleep 0.5
	done
	hssh 1 "cat $D/$1.log"; fail "$1: no '$2' within $3 s"
}
stoprecv() {
	local i
	hssh 1 "pkill -TERM -f '[x]l-incmig migrate-receive'" >/dev/null 2>&1
	for i in $(seq 1 60); do hssh 1 "pgrep -f '[x]l-incmig migrate-receive' >/dev/null" || return 0; sleep 1; done
	fail "$1: the receiver did not stop within 60 s of SIGTERM"
}
# untouched CASE: the migration failed before GO, cleanly
untouched() {
	local n=$1 out l
	waitlog "$n" '^rc=' 300
	stoprecv "$n"
	out=$(hssh 1 "cat $D/$n.log; echo ---- receiver; cat $D/$n.recv"); echo "$out" >"$LAB/logs/65-$n.log"
	echo "$out" | grep -q '^rc=0' && { echo "$out"; fail "$n: the migration succeeded"; }
	l=$(hssh 1 "xl list $g" | awk 'NR == 2 { print $1, $5 }')
	case $l in "$g "*p*) fail "$n: $g is paused ($l)" ;; "$g "*) ;; *) fail "$n: $g is not running: $(hssh 1 'xl list')" ;; esac
	hssh 1 "xl list" | grep -q -- "--migratedaway\|--incoming" && fail "$n: a renamed or incoming domain is left: $(hssh 1 'xl list')"
	sleep 3
	c=$(lg 1 check $g) || fail "$n: on the source after the failure: $c"
	hssh 1 "dmsetup ls | grep '^incmig-'" && fail "$n: an incmig dm device is left"
	hssh 1 "for n in /sys/block/nbd*/pid; do [ -e \$n ] && echo \$n; done" | grep -q . && fail "$n: an NBD device is still connected"
	echo "RESULT case=$n outcome=source_kept error=\"$(echo "$out" | grep -i 'refused\|fail\|error\|space' | head -n 1 | tr -d '"' | cut -c1-160)\" check=\"$c\""
}

# 1. the LV exists: refused, never written
hssh 1 "lvcreate -q -y --name taken --size ${SIZE}b $VG && dmsetup mknodes $VG-taken &&
	printf incmig55-marker | dd of=/dev/mapper/$VG-taken conv=notrunc,fsync 2>/dev/null" || fail "taken: LV"
receiver taken $VG/taken
migrate taken
untouched taken
hssh 1 "grep -q 'already exists' $D/taken.log $D/taken.recv" || fail "taken: the error does not say the LV exists"
[ "$(hssh 1 "head -c 15 /dev/mapper/$VG-taken")" = incmig55-marker ] || fail "taken: the existing LV was written"
hssh 1 "lvremove -q -f $VG/taken" || fail "taken: lvremove"

# 2. a volume group smaller than the disk
receiver no-space $SVG/dst
migrate no-space
untouched no-space
hssh 1 "grep -qi 'space' $D/no-space.log $D/no-space.recv" || fail "no-space: the error does not say what is missing: $(hssh 1 "tail -3 $D/no-space.log")"
hssh 1 "lvs $SVG/dst" >/dev/null 2>&1 && fail "no-space: $SVG/dst exists"

# 3. the receiver does not see xvdb as shared: the domain is not restored
# (--root $D: an option in place of --disk xvdb=shared; it is for files
# and changes nothing for an LV)
receiver unshared $VG/dst --root $D
migrate unshared
untouched unshared
hssh 1 "grep -q 'disk xvdb .* is not migrated' $D/unshared.recv" || fail "unshared: the receiver does not name xvdb"
hssh 1 "lvs $VG/dst" >/dev/null 2>&1 && fail "unshared: $VG/dst, created by the failed migration, is left"

# 4. the receiver stopped during PUSH, once it created the LV
receiver push-kill $VG/dst
migrate push-kill --bandwidth 64K
waitlog push-kill 'PUSH round 0' 120
hssh 1 "lvs $VG/dst" >/dev/null 2>&1 || fail "push-kill: the receiver did not create $VG/dst"
sleep 3
stoprecv push-kill
untouched push-kill
hssh 1 "lvs $VG/dst" >/dev/null 2>&1 && fail "push-kill: $VG/dst, created by the failed migration, is left"
hssh 1 "grep -q 'lvm:$VG/dst removed' $D/push-kill.recv" || fail "push-kill: the receiver does not say it removed $VG/dst"

# 5. the migration into the LV, xvdb passed through
receiver lvm $VG/dst
t0=$(now)
hssh 1 "xl-incmig migrate -s '' --no-progress --timeout 120 --shared-disk xvdb --json $D/report.json $g 127.0.0.1:$PORT" \
	>"$LAB/logs/65-migrate.out" 2>&1 || {
	cat "$LAB/logs/65-migrate.out"; hssh 1 "cat $D/lvm.recv" | tail -30; fail "xl-incmig migrate into lvm:$VG/dst"; }
t1=$(now)
cat "$LAB/logs/65-migrate.out"
for i in $(seq 1 120); do hssh 1 "pgrep -f '[x]l-incmig migrate-receive' >/dev/null" || break; sleep 1; done
hssh 1 "cat $D/lvm.recv" >"$LAB/logs/65-receive.log"
hssh 1 "pgrep -f '[x]l-incmig migrate-receive' >/dev/null" && fail "the receiver is still running 120 s after the migration (still in the I/O path?)"
list=$(hssh 1 "xl list")
echo "$list" | grep -q "^$g " || fail "domain $g not running after the migration: $list"
echo "$list" | grep -q -- "--migratedaway\|--incoming" && fail "a source or incoming domain is left: $list"
sleep 5
c=$(lg 1 check $g) || fail "after migrate: $c"
# the domain's disk is the dm device, on the LV itself: the check above read
# the guest's writes from the LV
tbl=$(hssh 1 "dmsetup table | grep '^incmig-$g-'") || fail "no incmig dm device for $g"
dev=$(echo "$tbl" | awk '{ print $5 }')
lv=$(hssh 1 "dmsetup info -c --noheadings -o major,minor --separator : $VG-dst | tr -d ' '")
[ -n "$lv" ] && [ "$dev" = "$lv" ] || fail "the domain's dm device is on $dev, not on $VG/dst ($lv): $tbl"
hssh 1 "for n in /sys/block/nbd*/pid; do [ -e \$n ] && echo \$n; done" | grep -q . && fail "an NBD device is still connected"
# xvdb: attached from the same file, not through incmig
echo "$tbl" | grep -q "^incmig-$g-xvdb" && fail "incmig put xvdb, a shared disk, under a dm device: $tbl"
hssh 1 "xl block-list $g" | grep -q '^51728 ' || fail "xvdb is not attached to $g after the migration: $(hssh 1 "xl block-list $g")"
hssh 1 "xenstore-ls /local/domain/0/backend/vbd/\$(xl domid $g)/51728 | grep -q 'params = \"$D/shared.img\"'" \
	|| fail "xvdb is not attached from $D/shared.img after the migration"
sz=$(hssh 1 "blockdev --getsize64 /dev/mapper/$VG-dst")
[ "$sz" -ge $SIZE ] || fail "$VG/dst is $sz bytes, less than the disk's $SIZE"
r=$(hssh 1 "cat $D/report.json")
js() { echo "$r" | grep -o "\"$1\": *[0-9.e+-]*" | head -n 1 | sed 's/.*: *//'; }
echo "RESULT case=lvm incmig_total=$(el $t0 $t1)s downtime_ms=$(js downtime_ms) wire=$(js wire_bytes) demand_blocks=$(js demand_blocks) check=\"$c\""
