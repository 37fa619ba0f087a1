#!/bin/bash
# 90-incmig-incremental: incremental migration on Xen (issue 12), with the
# guest writing its disk all along, on a 64 MiB file volume filled with
# random data (so that a full copy is 64 MiB and cannot be compressed
# away; --compress=off all the same, the bytes are the disk's):
#   trip 1, host 1 -> 2: the destination holds nothing: FULL;
#   trip 2, host 2 -> 1, back onto host 1's own volume, the copy host 1
#     let go at the end of trip 1: UNION, round 0 sends only the blocks
#     the guest wrote on host 2 (at most its 272-block footprint), against
#     trip 1's 16384, measured in the same run; CHECK OK;
#   the domain destroyed on host 1 (its busybox init cannot power off; to
#     blkback a destroy is the same detach), block-incmig saves the parked
#     bitmap with its generation, incmig's dm device removed, the domain
#     started again from its own configuration (the file, script=
#     block-incmig): the hook loads the bitmap and proves the generation;
#     it writes again, CHECK OK;
#   trip 3, host 1 -> 2 onto host 2's copy from trip 2: UNION again.
# Each trip: the domain runs on the destination only, CHECK OK.  The
# RESULT lines give each trip's decision, round-0 blocks, PUSH bytes,
# total time and downtime.  Models: 60-incmig-two-hosts.sh.
. "$(dirname "$0")/common.sh"
needhost 1 --two; needhost 2 --two
KO=$LAB/out/xen-blkback-incmig.ko
HOOK=$LABSRC/../../xenstore-hooks/block-incmig
[ -f "$LAB/out/blkback.failed" ] && fail "incmig's xen-blkback was not built: $(cat "$LAB/out/blkback.failed")"
[ -f "$KO" ] || fail "$KO missing: the lab's blkback step did not run (lab.sh build)"
[ -f "$HOOK" ] || fail "$HOOK missing"
g=im9 D=/root/lab/incr SIZE=67108864 FOOT=272   # the guest writes blocks 0..271 only
VOL=$D/dst/vm.img
scrub() {
	hssh $1 "for d in \$(xl list | awk 'NR > 2 { print \$1 }'); do xl destroy \$d; done
		pkill -f '[x]l-incmig migrate' ; sleep 1
		for m in \$(dmsetup ls 2>/dev/null | awk '/^incmig-/ { print \$1 }'); do dmsetup remove \$m; done
		losetup -D; rm -rf $D /var/lib/incmig/bitmaps" >/dev/null 2>&1
}
for h in 1 2; do
	scrub $h
	"$LABSRC/lab.sh" deploy $h || fail "deploy: incmig could not be built or installed in dom0 $h"
	tar -C "$LABSRC/dom0" -cf - . | hssh $h 'tar -C /root/lab -xf -' || fail "host $h: push dom0/"
	hssh $h 'cat >/etc/xen/scripts/block-incmig && chmod 755 /etc/xen/scripts/block-incmig' <"$HOOK" || fail "host $h: install block-incmig"
	hssh $h 'cat >/root/lab/xen-blkback-incmig.ko' <"$KO" || fail "push module to host $h"
	m=$(hssh $h /root/lab/blkbitmap.sh load-module /root/lab/xen-blkback-incmig.ko) || fail "load module on host $h: $m"
	hssh $h "rm -rf $D && mkdir -p $D/dst" || fail "host $h: $D"
done
# the hook logs with logger; dom0 keeps it in the journal (no syslog file)
hook_log() { hssh 1 'journalctl -t incmig --no-pager -n 5 2>/dev/null || grep block-incmig /var/log/syslog 2>/dev/null | tail -5'; }
cleanup() {
	for h in 1 2; do
		scrub $h
		hssh $h "rm -f /etc/xen/scripts/block-incmig; /root/lab/blkbitmap.sh stock-module" >&2
	done
}
trap cleanup EXIT

hssh 1 "head -c $SIZE /dev/urandom >$VOL" || fail "host 1: source volume"
start_guest() {
	hssh 1 "LABGUEST_DISKOPTS=script=block-incmig /root/lab/labguest.sh start $g $VOL" || fail "guest start on host 1"
}
start_guest
lg 2 watch $g
sleep 5
c=$(lg 1 check $g) || fail "before migrate: $c"

# trip FROM TO N: migrate onto TO's $VOL, check the guest there; sets
# BASE and BLOCKS (round 0's decision and blocks; 0 for FULL), PUSHED
# (blocks sent in all PUSH rounds), PUSHB (PUSH bytes on the wire)
trip() {
	local from=$1 to=$2 n=$3 out=$LAB/logs/90-trip$3-$1to$2.out t0 t1
	t0=$(now)
	hssh $from "xl-incmig migrate --no-progress --timeout 120 --compress=off --json $D/report.json \
		--dest-target xen --dest-root $D/dst --dest-disk xvda=$VOL $g xen$to" >"$out" 2>&1 || {
		rc=$?; cat "$out"; fail "trip $n: xl-incmig migrate $from->$to ($(rcwhy $rc))"; }
	t1=$(now)
	cat "$out"
	local list=$(hssh $to "xl list") lsrc=$(hssh $from "xl list")
	echo "$list" | grep -q "^$g " || fail "trip $n: domain $g not running on host $to: $list"
	echo "$lsrc" | grep -q "^$g " && fail "trip $n: domain $g still on host $from"
	echo "$list$lsrc" | grep -q -- "--migratedaway\|--incoming" && fail "trip $n: a source or incoming domain is left: $list $lsrc"
	sleep 5
	c=$(lg $to check $g) || fail "trip $n, on host $to: $c"
	local r=$(hssh $from "cat $D/report.json")
	js() { echo "$r" | grep -o "\"$1\": *[0-9.e+-]*" | head -n 1 | sed 's/.*: *//'; }
	BASE=$(echo "$r" | grep -o '"base":"[a-z]*"' | head -n 1 | cut -d'"' -f4)
	BLOCKS=$(js base_blocks) PUSHED=$(js pushed_blocks) PUSHB=$(js push)
	local why=$(echo "$r" | grep -o '"base_reason":"[^"]*"' | head -n 1)
	echo "RESULT trip=$n $from-$to base=$BASE base_blocks=$BLOCKS pushed_blocks=$PUSHED push_bytes=$PUSHB wire=$(js wire_bytes) total=$(el $t0 $t1)s downtime_ms=$(js downtime_ms) check=\"$c\" $why"
	[ -n "$BASE" ] && [ -n "$BLOCKS" ] && [ -n "$PUSHED" ] && [ -n "$PUSHB" ] ||
		fail "trip $n: no base/base_blocks/pushed_blocks/push in the report: $r"
}
# incremental N: trip N was UNION, round 0 within the guest's footprint
# (against trip 1's round 0 of the whole volume), and all its PUSH rounds
# under half of trip 1's bytes (later rounds carry what the guest writes
# while the migration runs, on both trips alike)
incremental() {
	[ "$BASE" = union ] || fail "trip $1: $BASE, not union (see RESULT's base_reason)"
	[ "$BLOCKS" -gt 0 ] && [ "$BLOCKS" -le $FOOT ] || fail "trip $1: round 0 sent $BLOCKS blocks; the guest writes $FOOT at most"
	[ $((PUSHB * 2)) -lt "$FULL_PUSH" ] ||
		fail "trip $1: $PUSHB bytes of PUSH, against the full copy's $FULL_PUSH"
	echo "RESULT trip=$1 vs_full round0_blocks=$BLOCKS/$((SIZE / 4096)) push_bytes=$PUSHB/$FULL_PUSH"
}

trip 1 2 1
[ "$BASE" = full ] || fail "trip 1: $BASE, expected full (host 2 holds no copy)"
[ "$PUSHED" -ge $((SIZE / 4096)) ] || fail "trip 1: PUSH sent $PUSHED blocks of a volume of $((SIZE / 4096)) random ones"
FULL_PUSH=$PUSHB
hssh 1 "xl-incmig lineage $VOL" || fail "host 1: the copy it let go is not proven"
sleep 20          # the guest writes on host 2
trip 2 1 2
incremental 2

# stopped and started again on host 1: the hook keeps the history
key=p-$(hssh 1 "realpath $VOL" | tr -d '\n' | sha256sum | cut -c1-32)
domid=$(hssh 1 "xl domid $g") || fail "no domid for $g on host 1"
be=/local/domain/0/backend/vbd/$domid/51712
gen=$(hssh 1 "xenstore-read $be/incmig-track-gen") && [ ${#gen} = 32 ] ||
	fail "host 1: the incoming VBD has no incmig-track-gen ('$gen'): the target did not record the generation"
[ "$(hssh 1 "xenstore-read $be/incmig-track-key")" = "$key" ] || fail "host 1: incmig-track-key is not $key"
hssh 1 "xl destroy $g" || fail "host 1: xl destroy $g"
sleep 2
hssh 1 "ls -l /var/lib/incmig/bitmaps/; cat /var/lib/incmig/bitmaps/$key.gen" || fail "host 1: block-incmig saved no bitmap for $key ($(hook_log))"
hssh 1 "grep -q '^$gen ' /var/lib/incmig/bitmaps/$key.gen" || fail "host 1: the saved bitmap is not of generation $gen"
hssh 1 "for m in \$(dmsetup ls | awk '/^incmig-$g/ { print \$1 }'); do dmsetup remove \$m; done" || fail "host 1: incmig's dm device stays"
start_guest
domid=$(hssh 1 "xl domid $g")
gen2=$(hssh 1 "xenstore-read /local/domain/0/backend/vbd/$domid/51712/incmig-track-gen")
[ "$gen2" = "$gen" ] || fail "host 1: started again, the VBD's generation is '$gen2', not $gen ($(hook_log))"
echo "RESULT restart=kept generation=$gen"
sleep 20          # the guest writes on host 1
c=$(lg 1 check $g) || fail "after the restart: $c"
trip 1 2 3
incremental 3
