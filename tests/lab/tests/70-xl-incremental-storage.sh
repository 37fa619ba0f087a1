#!/bin/bash
# 70-xl-incremental-storage: incmig as a Debian 12 dom0 installs it, used
# the way Xen administrators migrate.  Both dom0s get incmig from its
# packages (lab.sh deploy-debs: apt install of the four .debs, offline;
# DKMS builds xen-blkback-incmig for the running kernel; the patched xl
# replaces /usr/lib/xen-4.17/bin/xl under a dpkg diversion), and switch to
# the packaged xen-blkback as its README.Debian says.  Then `xl migrate
# --incremental-storage` of the writing test guest on a local disk (a file
# in dom0 1, never shared) to host 2 and back; xl starts `xl
# migrate-receive --incremental-storage` on the other host over ssh, as it
# does for plain xl migrate.  After each trip the checks of test 60: CHECK
# OK, the domain under its own name on the new host only, its disk incmig's
# dm device on a loop device of the destination volume (no NBD), the
# figures printed; after the trip back host 2 holds no incmig device.  Then
# one `xl-incmig migrate` of the same guest from host 1 to 2 in the same
# run: its downtime and the xl trip's (same hosts, same direction, a full
# copy to a new volume both times) must be of the same class, within a
# factor of DOWNTIME_FACTOR (under TCG on a busy machine the same
# migration's downtime varies about 2.7 times from run to run, test 30).
# Last, on each host, the packages removed (dom0/debs.sh remove): the
# diversion gone and xl dpkg's own again, no DKMS module left, modinfo and
# modprobe find the stock xen-blkback, then purged.
. "$(dirname "$0")/common.sh"
needhost 1 --two; needhost 2 --two
g=xi2 D=/root/lab/incmig
DOWNTIME_FACTOR=4
# scrub H: no domain, receiver (xl's or xl-incmig's), incmig dm or loop
# device, volume left on H
scrub() {
	hssh $1 "for d in \$(xl list | awk 'NR > 2 { print \$1 }'); do xl destroy \$d; done
		pkill -f '[x]l migrate' ; pkill -f '[x]l-incmig migrate' ; sleep 1
		for m in \$(dmsetup ls 2>/dev/null | awk '/^incmig-/ { print \$1 }'); do dmsetup remove \$m; done
		losetup -D; rm -rf $D" >/dev/null 2>&1
}
# hosts where the packages may be installed, and where removing them passed
installed='' removed=''
cleanup() {
	local h
	for h in 1 2; do
		scrub $h
		case " $installed " in *" $h "*) ;; *) continue ;; esac
		case " $removed " in *" $h "*) continue ;; esac
		hssh $h /root/lab/debs.sh remove >&2 || hssh $h /root/lab/blkbitmap.sh stock-module >&2
	done
}
trap cleanup EXIT
for h in 1 2; do
	scrub $h
	installed="$installed $h"
	"$LABSRC/lab.sh" deploy-debs $h; rc=$?
	# 77: Debian's xen source (for the patched xl) could not be downloaded
	[ $rc = 77 ] && { log "SKIP: the patched xl could not be built: Debian's xen source could not be downloaded (lab.sh deploy-debs said why above)"; exit 77; }
	[ $rc = 0 ] || fail "deploy-debs: incmig's packages could not be built or installed in dom0 $h (the reason is above)"
	m=$(hssh $h /root/lab/debs.sh use-module) || fail "host $h: $m"
	echo "host $h: $m"
	hssh $h "rm -rf $D && mkdir -p $D/dst" || fail "host $h: $D"
done
SIZE=67108864
hssh 1 "truncate -s $SIZE $D/src.img" || fail "source volume"
hssh 1 "/root/lab/labguest.sh start $g $D/src.img" || fail "guest start"
lg 2 watch $g
sleep 5
c=$(lg 1 check $g) || fail "before migrate: $c"

# trip HOW FROM TO VOLUME: migrate with HOW (xl: `xl migrate
# --incremental-storage`, xl-incmig: `xl-incmig migrate`) over ssh, check
# the guest and its disk on TO, print the figures; DOWNTIME_MS is the
# report's downtime.  --timeout 120: under TCG on a loaded machine the
# receiver's preparation took over the default 30 s (test 60).
trip() {
	local how=$1 from=$2 to=$3 vol=$4 out=$LAB/logs/70-$1-$2to$3.out t0 t1 cmd rc
	case $how in
	xl) cmd="xl migrate --incremental-storage" ;;
	*) cmd="xl-incmig migrate" ;;
	esac
	t0=$(now)
	hssh $from "$cmd --no-progress --timeout 120 --json $D/report.json --dest-target xen \
		--dest-root $D/dst --dest-disk xvda=$vol $g xen$to" >"$out" 2>&1 || {
		rc=$?; cat "$out"; fail "$cmd $from->$to ($(rcwhy $rc))"; }
	t1=$(now)
	cat "$out"
	# the receiver's stderr comes back over ssh, under its own name
	[ $how = xl ] && ! grep -q '^xl migrate-receive --incremental-storage: ' "$out" &&
		fail "$cmd $from->$to: no message of xl migrate-receive --incremental-storage: the receiver on host $to was not xl"
	local list=$(hssh $to "xl list") lsrc=$(hssh $from "xl list")
	echo "$list" | grep -q "^$g " || fail "domain $g not running on host $to after the migration: $list"
	echo "$list$lsrc" | grep -q -- "--migratedaway\|--incoming" && fail "a source or incoming domain is left: $list $lsrc"
	echo "$lsrc" | grep -q "^$g " && fail "domain $g still on host $from"
	sleep 5
	c=$(lg $to check $g) || fail "on host $to after $cmd: $c"
	local tbl
	tbl=$(hssh $to "dmsetup table | grep '^incmig-$g'") || fail "no incmig dm device on host $to: the disk is not on the destination volume"
	local dev=$(echo "$tbl" | awk '{ print $5 }') loop=$(hssh $to "losetup -j $vol | cut -d: -f1 | head -n 1")
	local mm=$(hssh $to "lsblk -dno MAJ:MIN $loop 2>/dev/null | tr -d ' '")
	[ -n "$loop" ] && [ "$dev" = "$mm" ] || fail "host $to: the destination volume is not under the guest: dm on $dev, $vol on ${loop:-no loop} ($mm)"
	hssh $to "for n in /sys/block/nbd*/pid; do [ -e \$n ] && echo \$n; done" | grep -q . && fail "host $to: an NBD device is still connected"
	hssh $to "[ \$(stat -c %s $vol) = $SIZE ]" || fail "host $to: $vol missing or of the wrong size"
	local gap=$(hbgap $g "$t0" 1 2) r=$(hssh $from "cat $D/report.json")
	js() { echo "$r" | grep -o "\"$1\": *[0-9.e+-]*" | head -n 1 | sed 's/.*: *//'; }
	DOWNTIME_MS=$(js downtime_ms)
	[ -n "$DOWNTIME_MS" ] || fail "$cmd $from->$to: no downtime_ms in the JSON report: $r"
	echo "RESULT trip=$how-$from-$to total=$(el $t0 $t1)s downtime_ms=$DOWNTIME_MS state_bytes=$(js state_bytes) push_s=$(js push_s) push=$(js push) stopcopy=$(js stopcopy) pull_demand=$(js pull_demand) pull_bg=$(js pull_background) pull_s=$(js pull_s) wire=$(js wire_bytes) $gap check=\"$c\""
}
trip xl 1 2 $D/dst/xvda.img
xl_ms=$DOWNTIME_MS
trip xl 2 1 $D/dst/back.img
# host 2 let the domain go, and with it the devices incmig made there
hssh 2 "dmsetup ls | grep '^incmig-'" && fail "host 2 kept incmig's dm device after the domain left"
hssh 2 "losetup -j $D/dst/xvda.img" | grep -q . && fail "host 2 kept the loop device on $D/dst/xvda.img"
echo "RESULT host2_devices=released"
# the comparison: xl-incmig's own command, host 1 to 2 again, to a new volume
trip xl-incmig 1 2 $D/dst/cmp.img
incmig_ms=$DOWNTIME_MS
ratio=$(echo "scale=2; if ($xl_ms > $incmig_ms) $xl_ms / $incmig_ms else $incmig_ms / $xl_ms" | bc 2>/dev/null)
[ -n "$ratio" ] || fail "downtimes not comparable: xl $xl_ms ms, xl-incmig $incmig_ms ms"
echo "RESULT downtime_xl_ms=$xl_ms downtime_xl_incmig_ms=$incmig_ms ratio=$ratio (same class: at most $DOWNTIME_FACTOR)"
[ "$(echo "$ratio <= $DOWNTIME_FACTOR" | bc)" = 1 ] ||
	fail "downtime of xl migrate --incremental-storage ($xl_ms ms) and of xl-incmig migrate ($incmig_ms ms), host 1 to 2: $ratio times apart, more than $DOWNTIME_FACTOR"

# the packages go: the stock xl and xen-blkback come back
for h in 1 2; do
	scrub $h
	m=$(hssh $h /root/lab/debs.sh remove) || fail "host $h: $m"
	removed="$removed $h"
	echo "host $h: $m"
done
echo "RESULT removed=stock-xl,stock-blkback"
