#!/bin/bash
# 80-incmig-failures: `xl-incmig migrate` from host 1 to host 2 made to fail
# at each stage, the writing test guest on a local disk of host 1:
#   push-kill   the receiver killed (SIGTERM) during PUSH
#   state-cut   the link cut (the ssh client killed) during libxl's memory
#               pre-copy
#   no-space    the destination's filesystem smaller than the disk
#   pull-cut    the link cut at the point of no return (PULL): the source
#               reconnects through a new ssh session and PULL completes
# Before GO the guest must keep running on host 1 under its own name,
# unpaused, its disk verifying (CHECK OK), and host 2 must hold nothing of
# it (no domain, volume, dm or NBD device).  After GO it must end on host 2
# with CHECK OK.
. "$(dirname "$0")/common.sh"
needhost 1 --two; needhost 2 --two
KO=$LAB/out/xen-blkback-incmig.ko
[ -f "$LAB/out/blkback.failed" ] && fail "incmig's xen-blkback was not built: $(cat "$LAB/out/blkback.failed")"
[ -f "$KO" ] || fail "$KO missing: the lab's blkback step did not run (lab.sh build)"
g=im3 D=/root/lab/incmig
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
	hssh 2 "umount $D/dst 2>/dev/null" >/dev/null 2>&1
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
c=$(lg 1 check $g) || fail "before the first migration: $c"

# migrate NAME [OPTIONS...]: start the migration on host 1 in the
# background, its output in $D/NAME.log there
migrate() {
	local n=$1; shift
	hssh 1 "rm -f $D/$n.log; setsid sh -c 'xl-incmig migrate --no-progress --timeout 120 --dest-target xen \
		--dest-root $D/dst --dest-disk xvda=$D/dst/xvda.img $* $g xen2 >$D/$n.log 2>&1; echo rc=\$? >>$D/$n.log' \
		</dev/null >/dev/null 2>&1 &"
}
# waitlog NAME PATTERN SECS: until host 1's $D/NAME.log has PATTERN
waitlog() {
	local i
	for i in $(seq 1 $(($3 * 2))); do
		hssh 1 "grep -q -- \"$2\" $D/$1.log" && return 0
		sleep 0.5
	done
	hssh 1 "cat $D/$1.log"; fail "$1: no '$2' within $3 s"
}
# untouched NAME: the migration failed before GO, cleanly
untouched() {
	local n=$1 out l
	waitlog "$n" '^rc=' 300
	out=$(hssh 1 "cat $D/$n.log"); cp /dev/null "$LAB/logs/80-$n.log"; echo "$out" >"$LAB/logs/80-$n.log"
	echo "$out" | grep -q '^rc=0' && { echo "$out"; fail "$n: the migration succeeded"; }
	l=$(hssh 1 "xl list $g" | awk 'NR == 2 { print $1, $5 }')
	case $l in "$g "*p*) fail "$n: $g is paused on host 1 ($l)" ;; "$g "*) ;; *) fail "$n: $g is not running on host 1: $(hssh 1 'xl list')" ;; esac
	hssh 1 "xl list" | grep -q -- "--migratedaway" && fail "$n: host 1 renamed the domain"
	sleep 3
	c=$(lg 1 check $g) || fail "$n: on host 1 after the failure: $c"
	for i in $(seq 1 30); do hssh 2 "pgrep -f '[x]l-incmig migrate-receive' >/dev/null" || break; sleep 1; done
	hssh 2 "xl list | grep -q '^$g'" && fail "$n: host 2 kept a domain: $(hssh 2 'xl list')"
	hssh 2 "dmsetup ls | grep '^incmig-'" && fail "$n: host 2 kept an incmig dm device"
	hssh 2 "for n in /sys/block/nbd*/pid; do [ -e \$n ] && echo \$n; done" | grep -q . && fail "$n: host 2 kept an NBD device connected"
	hssh 2 "test -e $D/dst/xvda.img" && fail "$n: host 2 kept the partial volume $D/dst/xvda.img"
	echo "RESULT case=$n outcome=source_kept error=\"$(echo "$out" | grep -i 'fail\|error\|stopped' | tail -n 1 | tr -d '"' | cut -c1-160)\" check=\"$c\""
}

# 1. the receiver stopped during PUSH (a capped link makes PUSH last)
migrate push-kill --bandwidth 64K
waitlog push-kill 'PUSH round 0' 120
sleep 3
hssh 2 "pkill -TERM -f '[x]l-incmig migrate-receive'"
untouched push-kill

# 2. the link cut during libxl's memory pre-copy
migrate state-cut
waitlog state-cut "memory pre-copy" 120
sleep 3
hssh 1 "pkill -f '[s]sh .*xen2.*migrate-receive'" || fail "state-cut: no ssh to cut"
untouched state-cut

# 3. the destination's filesystem smaller than the disk
hssh 2 "truncate -s 24M $D/small.fs && mkfs.ext4 -q -F $D/small.fs && mkdir -p $D/dst && mount -o loop $D/small.fs $D/dst" || fail "no-space: small filesystem"
migrate no-space
untouched no-space
hssh 2 "umount $D/dst && rm -f $D/small.fs" || fail "no-space: umount"
hssh 1 "grep -qi 'space\|too small\|ENOSPC' $D/no-space.log" || fail "no-space: the error does not say what is missing: $(hssh 1 "tail -3 $D/no-space.log")"

# 4. the link cut at the point of no return: PULL resumes over a new link
hssh 1 "setsid sh -c 'until xl list | grep -q -- \"$g--migratedaway\"; do sleep 0.05; done; pkill -f \"[s]sh .*xen2.*migrate-receive\"; echo cut >$D/cut'  </dev/null >/dev/null 2>&1 &"
migrate pull-cut --reconnect 120
waitlog pull-cut '^rc=' 300
out=$(hssh 1 "cat $D/pull-cut.log"); echo "$out" >"$LAB/logs/80-pull-cut.log"
hssh 1 "test -f $D/cut" || { echo "$out"; fail "pull-cut: the link was not cut at GO"; }
echo "$out" | grep -q '^rc=0' || { echo "$out"; fail "pull-cut: the migration did not finish after the link came back"; }
hssh 2 "xl list | grep -q '^$g '" || fail "pull-cut: $g not on host 2"
sleep 5
c=$(lg 2 check $g) || fail "pull-cut: on host 2: $c"
echo "RESULT case=pull-cut outcome=completed_after_reconnect reconnects=\"$(echo "$out" | grep -ci 'reconnect\|resum')\" check=\"$c\""
