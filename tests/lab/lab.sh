#!/bin/bash
# tests/lab/lab.sh: the nested Xen lab's single entry point (README here).
# Real Xen 4.17 + Debian 12 dom0 + PV test guests, booted under QEMU TCG on
# this machine, built from Debian's packages and cached in $LAB
# (INCMIG_LAB_DIR, default /var/tmp/incmig-lab), never in the repository.
#
#   lab.sh build            build what changed (stamp files, see lib.sh step)
#   lab.sh boot N [--two]   boot host N (1|2); --two: with the link to the other
#   lab.sh wait N           wait until dom0 N is ready, sync its clock, push
#                           dom0/ helpers and the guest into /root/lab
#   lab.sh up [--two]       boot + wait host 1 (and host 2, linked)
#   lab.sh deploy N         build incmig (a copy of this work tree, built in
#                           $LAB/work) and install it into dom0 N's /usr/local
#   lab.sh deploy-debs N    build incmig's .debs and the patched xl from this
#                           work tree, apt install them in dom0 N (DKMS)
#   lab.sh ssh N CMD...     run CMD in dom0 of host N
#   lab.sh stop [N]         stop host N (default: all)
#   lab.sh check            build, boot both hosts, run every tests/*.sh
#   lab.sh smoke            build, boot host 1, run the one-host tests
#                           (10, 20, 40, 50); FAIL/SKIP lines say why
#   lab.sh status | clean
set -uo pipefail
. "$(dirname "$0")/lib.sh"

build() {
	local t0=$(date +%s)
	HOST_PKGS="$HOST_PKGS kmod" host_deps   # kmod: modinfo (blkback step, test 40)
	[ -f "$LAB/out/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C incmig-lab -f "$LAB/out/id_ed25519" || die "ssh-keygen"
	step xen build-xen.sh
	step rootfs build-rootfs.sh extract-vmlinux.py "$(mirror)" "$LAB/out/id_ed25519.pub"
	step image build-image.sh "$LAB/stamps/rootfs"
	step guest build-guest.sh "$LABSRC/guest/init" "$LAB/stamps/rootfs"
	blkback_step
	if [ -f "$LAB/out/blkback.failed" ]; then
		log "build: done after $(( $(date +%s) - t0 ))s, but the blkback step FAILED (test 40 will fail): $(cat "$LAB/out/blkback.failed")"
	else
		log "build: all up to date after $(( $(date +%s) - t0 ))s"
	fi
}

# incmig's xen-blkback (blkback-patch/) for test 40.  Its failure does not
# stop the other steps, but it is not hidden either: the reason goes to
# out/blkback.failed and test 40 fails with it (a skip is not a pass).
blkback_step() {
	local P=$LABSRC/../../blkback-patch F=$LAB/out/blkback.failed L=$LAB/logs/build-blkback.log why
	rm -f "$F"
	[ -d "$P" ] || { log "blkback: this checkout has no blkback-patch/, not built (test 40 will skip)"; return 0; }
	[ -f "$LAB/out/xen-blkback-incmig.ko" ] || rm -f "$LAB/stamps/blkback"
	( step blkback build-blkback.sh "$LAB/stamps/rootfs" "$P"/{Makefile,Kbuild,patches/*} ) && return 0
	# the reason: the log's last error line (ours first), else its last line
	why=$(grep -a -E '^xen-blkback: error|^blkback-patch/|error|[Cc]annot|No such|not found|missing|is not' "$L" 2>/dev/null | tail -n 1)
	[ -n "$why" ] || why=$(tail -n 1 "$L" 2>/dev/null)
	echo "lab build step blkback failed: ${why:-no log} (log: $L)" >"$F"
	log "blkback: FAILED, test 40 will fail: $(cat "$F")"
}

running() { [ -f "$LAB/run/host$1.pid" ] && kill -0 "$(cat "$LAB/run/host$1.pid")" 2>/dev/null; }

stop() {
	local n
	for n in ${1:-1 2}; do
		running "$n" || continue
		kill "$(cat "$LAB/run/host$n.pid" 2>/dev/null)" 2>/dev/null
		for i in $(seq 1 50); do running "$n" || break; sleep 0.1; done
		running "$n" && kill -9 "$(cat "$LAB/run/host$n.pid" 2>/dev/null)" 2>/dev/null
		log "host $n stopped"
	done
}

wait_host() {
	local n=$1 tmo=${INCMIG_LAB_BOOT_TIMEOUT:-900} S t0 el xen_t= ready_t=
	S=$LAB/logs/host$n.serial
	t0=$(cat "$LAB/run/host$n.t0") || die "host $n was not booted"
	while :; do
		el=$(echo "$(date +%s.%N) - $t0" | bc)
		[ -z "$xen_t" ] && grep -a -q '(XEN) Xen version' "$S" 2>/dev/null && xen_t=$el
		if [ -z "$ready_t" ] && grep -a -q 'LAB-DOM0-READY' "$S" 2>/dev/null; then
			hssh "$n" true 2>/dev/null && ready_t=$el && break
		fi
		grep -a -q 'Panic on CPU\|Kernel panic\|Dom0 crashed' "$S" 2>/dev/null &&
			{ tail -30 "$S" >&2; die "host $n crashed after ${el}s (console: $S)"; }
		running "$n" || die "host $n: qemu exited after ${el}s: $(cat "$LAB/logs/host$n.qemu.stderr")"
		[ "$(echo "$el > $tmo" | bc)" = 1 ] && { tail -20 "$S" >&2; die "host $n not ready after ${tmo}s"; }
		sleep 1
	done
	log "host $n: xen banner ${xen_t}s, dom0 ready (marker + ssh) ${ready_t}s ($(grep -a -o 'LAB-DOM0-READY.*' "$S" | head -1 | tr -d '\r'))"
	echo "xen_banner=${xen_t} dom0_ready=${ready_t}" >"$LAB/logs/host$n.boottime"
	# same wall clock as this machine (dom0 passes it to Xen, Xen to guests):
	# heartbeat gaps are measured across hosts with it
	hssh "$n" "date -s @$(date +%s.%N) >/dev/null" || die "host $n: clock sync"
	tar -C "$LABSRC/dom0" -cf - . | hssh "$n" 'mkdir -p /root/lab && tar -C /root/lab -xf -' || die "host $n: push dom0/"
	tar -C "$LAB/out" -cf - guest-vmlinuz guest-initrd.gz -C /bin busybox |
		hssh "$n" 'tar -C /root/lab -xf -' || die "host $n: push guest"
}

up() {
	local two=${1:-}
	if [ "$two" = --two ]; then
		"$LABSRC/boot.sh" 1 --two || exit 1
		"$LABSRC/boot.sh" 2 --two || exit 1
		wait_host 1; wait_host 2
		hssh 1 'ssh -o ConnectTimeout=20 xen2 true' || die "dom0 1 cannot ssh to dom0 2 over the link"
		log "hosts 1 and 2 up and linked"
	else
		"$LABSRC/boot.sh" 1 || exit 1
		wait_host 1
	fi
}

# run_tests GLOB...: run tests/NN-*.sh, 0 pass, 77 skip; summary in logs/.
# A FAIL or SKIP line ends with "-- why": the test's last "FAIL: " or
# "SKIP: " message (a skip must say its cause), else its exit code.
run_tests() {
	local t rc fail=0 s=$LAB/logs/summary l why
	: >"$s"
	for t in "$@"; do
		local t0=$(date +%s)
		l=$LAB/logs/$(basename "$t" .sh).log
		log "=== $(basename "$t")"
		bash "$t" 2>&1 | tee "$l"
		rc=${PIPESTATUS[0]}
		case $rc in 0) r=PASS ;; 77) r=SKIP ;; *) r=FAIL; fail=1 ;; esac
		why=
		if [ $r != PASS ]; then
			why=$(grep -a -o "$r: .*" "$l" | tail -n 1); why=${why#$r: }
			[ -n "$why" ] || why="exit $rc, no $r: message; last line: $(tail -n 1 "$l")"
		fi
		echo "$r $(basename "$t") $(( $(date +%s) - t0 ))s $(grep -h '^RESULT' "$l" | tr '\n' ' ')${why:+-- $why}" | tee -a "$s"
	done
	log "summary:"; cat "$s" >&2
	return $fail
}

# deploy N: the project's own build, made on this machine (Debian 12 like
# dom0) from a copy of the work tree (no build files land in the repository)
# and unpacked into dom0's /usr/local.  The lab's baselines do not need it.
# treesum TOP: a hash of the work tree's files but the lab's own: the same
# tree deploys the same build, the second host (and the next test) reuse
# it, anything changed in the tree (but tests/lab/) builds again
treesum() {
	(cd "$1" && git ls-files -co --exclude-standard | grep -v "^tests/lab/" | LC_ALL=C sort |
		tar -cf - -T - --mtime=@0 --owner=0 --group=0 | sha256sum | cut -c1-16)
}

deploy() {
	local n=$1 top=$(cd "$LABSRC/../.." && pwd) B=$LAB/work/incmig
	local deps="autoconf automake libtool pkg-config libaio-dev zlib1g-dev libnbd-dev libxen-dev"
	HOST_PKGS=$deps host_deps
	local sum=$(treesum "$top")
	if [ "$(cat "$B/stamp" 2>/dev/null)" != "$sum" ] || [ ! -d "$B/root/usr" ]; then
		rm -rf "$B"; mkdir -p "$B/src" "$B/root"
		(cd "$top" && git ls-files -co --exclude-standard | tar -cf - -T -) | tar -C "$B/src" -xf - || die "deploy: copy"
		(cd "$B/src" && autoreconf -fi && ./configure --prefix=/usr/local && make -j"$(nproc)" && make install DESTDIR="$B/root") \
			>"$LAB/logs/deploy-build.log" 2>&1 || { log "deploy: incmig build failed, see $LAB/logs/deploy-build.log"; return 1; }
		echo "$sum" >"$B/stamp"
	fi
	tar -C "$B/root" -cf - . | hssh "$n" 'tar -C / -xf - && ldconfig' || die "deploy: push to host $n"
	log "deploy: incmig installed in dom0 $n ($(hssh "$n" 'ls /usr/local/bin /usr/local/sbin 2>/dev/null | tr "\n" " "'))"
}

# deploy-debs N: incmig the way a Debian 12 dom0 installs it (README
# "Debian packages"), not from a build tree.  On this machine, from a copy
# of the work tree: the four .debs (debian/build-debs.sh, as ./setup.sh
# test builds them, lintian included) and the patched xl
# (tools/xl-patch/build-xl.sh, linked against the libincmig of that same
# package build), cached in $LAB/work/incmig-debs per tree (treesum).  In
# dom0 N: dom0/debs.sh install (apt-get install of the .debs, offline;
# DKMS builds xen-blkback-incmig for the running kernel; the patched xl
# under a dpkg diversion).  Returns 77 when Debian's xen source cannot be
# downloaded for xl (a cause outside the project), 1 on any other failure.
deploy_debs() {
	local n=$1 top=$(cd "$LABSRC/../.." && pwd) W=$LAB/work/incmig-debs
	local L=$LAB/logs/deploy-debs-build.log sum missing rc out
	sum=$(treesum "$top")
	if [ "$(cat "$W/stamp" 2>/dev/null)" != "$sum" ] || [ ! -x "$W/xl/xl" ] || ! ls "$W"/deb/*.deb >/dev/null 2>&1; then
		rm -f "$W/stamp"; mkdir -p "$W"
		HOST_PKGS="debhelper dh-dkms lintian dpkg-dev libyajl-dev uuid-dev" host_deps
		# the rest of debian/control's Build-Depends, without versions,
		# build profiles and architectures
		missing=$(cd "$top" && dpkg-checkbuilddeps 2>&1 | sed -n 's/.*Unmet build dependencies: //p' |
			sed -e 's/([^)]*)//g' -e 's/<[^>]*>//g' -e 's/\[[^]]*\]//g')
		[ -z "$missing" ] || HOST_PKGS=$missing host_deps
		log "deploy-debs: building the packages and the patched xl (log: $L)"
		JOBS=$(nproc) $NICE "$top/debian/build-debs.sh" "$W/deb" >"$L" 2>&1 ||
			{ log "deploy-debs: the packages could not be built: $(tail -n 1 "$L") (log: $L)"; return 1; }
		$NICE "$top/tools/xl-patch/build-xl.sh" "$W/deb/src" "$W/deb/src" "$W/xl" >>"$L" 2>&1; rc=$?
		if [ $rc = 77 ]; then
			log "SKIP: deploy-debs: $(cat "$W/xl/download-failed" 2>/dev/null || echo "Debian's xen source could not be downloaded") (log: $L)"
			return 77
		fi
		[ $rc = 0 ] || { log "deploy-debs: the patched xl could not be built: $(tail -n 1 "$L") (log: $L)"; return 1; }
		echo "$sum" >"$W/stamp"
		log "deploy-debs: $(grep -a '^lintian (' "$L"); $(grep -a '^build-xl: .* built' "$L")"
	fi
	( cd "$W/deb" && tar -cf - ./*.deb -C "$W/xl" xl xen.version -C "$LABSRC/dom0" debs.sh ) |
		hssh "$n" 'rm -rf /root/lab/debs && mkdir -p /root/lab/debs && tar -C /root/lab/debs -xf - &&
			mv /root/lab/debs/debs.sh /root/lab/debs.sh' || die "deploy-debs: push to host $n"
	out=$(hssh "$n" /root/lab/debs.sh install /root/lab/debs) ||
		{ log "deploy-debs: dom0 $n: $out"; return 1; }
	log "deploy-debs: dom0 $n: $out"
}

cmd=${1:-}; shift || true
case $cmd in
build) build ;;
boot) "$LABSRC/boot.sh" "$@" ;;
wait) wait_host "${1:?host}" ;;
deploy) deploy "${1:?host}" ;;
deploy-debs) deploy_debs "${1:?host}" ;;
up) up "$@" ;;
ssh) n=${1:?host}; shift; hssh "$n" "$@" ;;
stop) stop "${1:-}" ;;
status) for n in 1 2; do running $n && echo "host $n: running, ssh port $((PORTBASE + n))" || echo "host $n: stopped"; done
	ls -la "$LAB/out" "$LAB/stamps" ;;
check|smoke)
	T0=$(date +%s); build
	stop; rm -f "$LAB/run/shared.raw"
	[ -n "${INCMIG_LAB_KEEP:-}" ] || trap stop EXIT
	if [ "$cmd" = check ]; then up --two; tests=("$LABSRC"/tests/[0-9]*.sh)
	else
		# one host: save/restore, localhost xl migrate, blkback bitmap,
		# localhost xl-incmig migrate; test 40 with 2+2 overhead runs
		# instead of 8+8 (same assertions)
		export INCMIG_LAB_BENCH_PAIRS=${INCMIG_LAB_BENCH_PAIRS:-2}
		up; tests=("$LABSRC"/tests/1*.sh "$LABSRC"/tests/2*.sh "$LABSRC"/tests/4*.sh "$LABSRC"/tests/5*.sh)
	fi
	run_tests "${tests[@]}"; rc=$?
	log "$cmd: rc=$rc, total $(( $(date +%s) - T0 ))s$(grep -a -E '^(FAIL|SKIP) ' "$LAB/logs/summary" | sed 's/^\([A-Z]*\) \([^ ]*\) .* -- /; \1 \2: /' | tr -d '\n')"
	exit $rc ;;
clean) stop; umount "$LAB/work/rootfs/proc" 2>/dev/null
	mountpoint -q "$LAB/work/rootfs/proc" && die "$LAB/work/rootfs/proc still mounted"
	rm -rf "$LAB" ;;
*) sed -n '2,21p' "$0" | sed 's/^# \?//'; exit 2 ;;
esac
