#!/bin/bash
# dom0/debs.sh: runs inside dom0 (pushed to /root/lab by lab.sh wait and
# deploy-debs).  incmig as a Debian 12 dom0 installs it, from its packages
# (debian/, README "Debian packages"), for lab.sh deploy-debs and test 70.
#   debs.sh install DIR   DIR holds the four .debs and the patched xl:
#           what `lab.sh deploy` put in /usr/local goes first (one incmig
#           per host), `apt-get install DIR/*.deb` (offline: every
#           dependency must already be in the image), DKMS must have built
#           and installed xen-blkback-incmig for the running kernel while
#           modprobe still finds the stock module, then the patched xl
#           replaces /usr/lib/xen-4.17/bin/xl under a dpkg diversion (the
#           stock one renamed xl.stock) and links the packaged libincmig
#   debs.sh use-module    switch to the packaged module as its README.Debian
#           says (the depmod.d override commented out, depmod, reload; no
#           VBD may exist)
#   debs.sh remove        the diversion removed (the stock xl back, dpkg's
#           checksum), `apt-get remove` of the packages, then: no DKMS
#           module left, modinfo finds the stock xen-blkback and modprobe
#           loads it (no VBD may exist), no libincmig, no xl-incmig; then
#           purged: nothing of the packages left
# Each prints one summary line on success; on failure the reason, exit 1.
set -u
cmd=${1:-}
XL=/usr/lib/xen-4.17/bin/xl
PKGS="incmig libincmig0 libincmig-dev xen-blkback-incmig-dkms"
K=$(uname -r)
STOCK=/lib/modules/$K/kernel/drivers/block/xen-blkback/xen-blkback.ko
DEPMODCONF=/etc/depmod.d/xen-blkback-incmig.conf
LOG=/root/lab/debs-$cmd.log
die() { echo "debs.sh $cmd: $*"; exit 1; }
status() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null; }
novbd() {
	local i
	for i in $(seq 1 300); do ls /sys/bus/xen-backend/devices/ 2>/dev/null | grep -q '^vbd-' || return 0; sleep 0.1; done
	die "a VBD exists ($(ls /sys/bus/xen-backend/devices/ | grep '^vbd-' | tr '\n' ' ')): xen-blkback cannot be reloaded"
}
reload() {
	novbd
	if [ -d /sys/module/xen_blkback ]; then modprobe -r xen-blkback || die "modprobe -r xen-blkback failed"; fi
	modprobe xen-blkback || die "modprobe xen-blkback failed"
}
# the patched xl answers with libincmig's usage line; the stock one does not know the switch
patched_xl() { xl migrate --incremental-storage --help 2>/dev/null | grep -q '^usage: xl migrate --incremental-storage'; }

case $cmd in
install)
	D=${2:?DIR}
	for p in $PKGS; do
		ls "$D/${p}_"*.deb >/dev/null 2>&1 || die "no ${p}_*.deb in $D"
	done
	[ -x "$D/xl" ] || die "no patched xl in $D"
	[ -x "$XL" ] || die "$XL missing: is xen-utils-4.17 installed?"
	rm -f /usr/local/bin/xl-incmig /usr/local/sbin/xl-incmig /usr/local/include/incmig.h \
		/usr/local/lib/libincmig.* /usr/local/lib/pkgconfig/incmig.pc /usr/local/share/man/man1/xl-incmig.1
	ldconfig
	t0=$(date +%s)
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$D"/*.deb >"$LOG" 2>&1 || {
		grep -a -E '^E: |Depends:|Error|error' "$LOG" | tail -15
		die "apt-get install failed (log: $LOG; dom0 has no network: every dependency must be in the lab image, build-rootfs.sh)"; }
	t1=$(date +%s)
	for p in $PKGS; do
		[ "$(status $p)" = "install ok installed" ] || die "$p is not installed after apt-get install: $(status $p)"
	done
	ds=$(dkms status -m xen-blkback-incmig -k "$K" 2>&1)
	echo "$ds" | grep -q ': installed' || {
		tail -20 /var/lib/dkms/xen-blkback-incmig/*/build/make.log 2>/dev/null
		die "dkms status does not show xen-blkback-incmig installed for the running kernel $K: ${ds:-nothing}"; }
	ko=$(ls /lib/modules/"$K"/updates/dkms/xen-blkback.ko* 2>/dev/null | head -n 1)
	[ -n "$ko" ] || die "DKMS says installed but /lib/modules/$K/updates/dkms has no xen-blkback.ko"
	[ "$(modinfo -F incmig_tracking "$ko")" = 1 ] || die "$ko has no incmig_tracking: not incmig's module"
	[ "$(modinfo -F vermagic "$ko" | cut -d' ' -f1)" = "$K" ] || die "$ko: vermagic $(modinfo -F vermagic "$ko") is not $K"
	# installing the package must not switch the block backend by itself
	[ "$(modinfo -n xen-blkback)" = "$STOCK" ] || die "after install modinfo finds $(modinfo -n xen-blkback), not the stock $STOCK"
	# the patched xl, under a diversion (a second deploy keeps the first one's)
	case $(dpkg-divert --listpackage "$XL") in
	LOCAL) ;;
	'') dpkg-divert --local --rename --divert "$XL.stock" --add "$XL" >>"$LOG" 2>&1 || die "dpkg-divert --add $XL failed" ;;
	*) die "$XL is already diverted by package $(dpkg-divert --listpackage "$XL")" ;;
	esac
	[ -x "$XL.stock" ] || die "the diversion did not keep the stock xl as $XL.stock"
	install -m 0755 "$D/xl" "$XL" || die "install xl"
	l=$(ldd "$XL")
	echo "$l" | grep -q 'not found' && die "the patched xl misses libraries: $(echo "$l" | grep 'not found' | tr '\n' ' ')"
	li=$(echo "$l" | awk '$1 == "libincmig.so.0" { print $3 }')
	case $li in
	/lib/x86_64-linux-gnu/*|/usr/lib/x86_64-linux-gnu/*) ;;
	*) die "the patched xl loads libincmig.so.0 from '${li:-nowhere}', not from libincmig0's /usr/lib/x86_64-linux-gnu" ;;
	esac
	xl help migrate 2>&1 | grep -q -- '--incremental-storage' || die "xl help migrate lacks --incremental-storage"
	patched_xl || die "xl migrate --incremental-storage --help is not libincmig's usage"
	xl list >/dev/null || die "the patched xl cannot list domains"
	[ "$(command -v xl-incmig)" = /usr/sbin/xl-incmig ] || die "xl-incmig is $(command -v xl-incmig), not the package's /usr/sbin/xl-incmig"
	echo "installed: $(for p in $PKGS; do printf '%s=%s ' $p "$(dpkg-query -W -f='${Version}' $p)"; done)in $((t1 - t0)) s;" \
		"dkms: $(echo "$ds" | head -n 1); xl: patched ($(cat "$D/xen.version" 2>/dev/null || echo '?') +" \
		"--incremental-storage, libincmig from $li), stock diverted to $XL.stock; xen-utils-4.17 $(dpkg-query -W -f='${Version}' xen-utils-4.17)"
	;;
use-module)
	[ -f "$DEPMODCONF" ] || die "$DEPMODCONF missing: is xen-blkback-incmig-dkms installed?"
	sed -i 's/^override/#override/' "$DEPMODCONF"
	depmod -a || die "depmod -a failed"
	f=$(modinfo -n xen-blkback)
	case $f in /lib/modules/$K/updates/dkms/xen-blkback.ko*) ;; *) die "with the override commented out modinfo still finds $f" ;; esac
	reload
	[ -d /sys/kernel/xen-blkback-incmig ] || die "modprobe xen-blkback loaded a module without /sys/kernel/xen-blkback-incmig"
	echo "xen-blkback: $f loaded (incmig_tracking=$(modinfo -F incmig_tracking xen-blkback))"
	;;
remove)
	: >"$LOG"
	if [ "$(dpkg-divert --listpackage "$XL")" = LOCAL ]; then
		rm -f "$XL"
		dpkg-divert --local --rename --remove "$XL" >>"$LOG" 2>&1 || die "dpkg-divert --remove $XL failed"
	fi
	[ -z "$(dpkg-divert --list "$XL")" ] || die "a diversion of $XL is left: $(dpkg-divert --list "$XL")"
	[ ! -e "$XL.stock" ] || die "$XL.stock is left"
	sum=$(awk -v f="${XL#/}" '$2 == f { print $1 }' /var/lib/dpkg/info/xen-utils-4.17.md5sums)
	[ -n "$sum" ] && [ "$(md5sum <"$XL" | cut -d' ' -f1)" = "$sum" ] || die "$XL is not xen-utils-4.17's (md5 $(md5sum <"$XL" | cut -d' ' -f1), dpkg has ${sum:-none})"
	patched_xl && die "xl still knows --incremental-storage after the diversion was removed"
	novbd
	# those installed: apt (no package lists) cannot name the others
	inst=$(for p in $PKGS; do [ "$(status $p)" = "install ok installed" ] && echo $p; done)
	[ -z "$inst" ] || DEBIAN_FRONTEND=noninteractive apt-get remove -y -q $inst >>"$LOG" 2>&1 ||
		{ tail -15 "$LOG"; die "apt-get remove $inst failed (log: $LOG)"; }
	for p in $PKGS; do
		case $(status $p) in "install ok installed") die "$p is still installed after apt-get remove" ;; esac
	done
	ds=$(dkms status -m xen-blkback-incmig 2>&1)
	[ -z "$ds" ] || die "dkms still lists the module after apt-get remove: $ds"
	ls /lib/modules/"$K"/updates/dkms/xen-blkback.ko* >/dev/null 2>&1 && die "/lib/modules/$K/updates/dkms still holds xen-blkback.ko"
	[ "$(modinfo -n xen-blkback)" = "$STOCK" ] || die "after remove modinfo finds $(modinfo -n xen-blkback), not the stock $STOCK"
	reload
	[ -d /sys/kernel/xen-blkback-incmig ] && die "modprobe xen-blkback loaded incmig's module after remove"
	[ -n "$(modinfo -F incmig_tracking xen-blkback)" ] && die "the xen-blkback modinfo finds has incmig_tracking"
	ldconfig -p | grep -q 'libincmig\.so' && die "libincmig is still known to ld.so: $(ldconfig -p | grep libincmig)"
	command -v xl-incmig >/dev/null && die "xl-incmig is still there: $(command -v xl-incmig)"
	# dpkg, not apt: packages with no conffiles are gone from dpkg's
	# database already, and apt (no package lists in dom0) cannot name them
	cf=$(for p in $PKGS; do [ "$(status $p)" = "deinstall ok config-files" ] && echo $p; done)
	[ -z "$cf" ] || dpkg --purge $cf >>"$LOG" 2>&1 || { tail -15 "$LOG"; die "dpkg --purge $cf failed (log: $LOG)"; }
	for p in $PKGS; do
		s=$(status $p); case $s in ""|"unknown ok not-installed") ;; *) die "$p after purge: $s" ;; esac
	done
	[ -e "$DEPMODCONF" ] && die "$DEPMODCONF is left after purge"
	ls -d /usr/src/xen-blkback-incmig-* >/dev/null 2>&1 && die "/usr/src/xen-blkback-incmig-* is left after purge"
	[ -e /etc/xen/scripts/block-incmig ] && die "/etc/xen/scripts/block-incmig is left after purge"
	echo "removed: xl is xen-utils-4.17's again (no diversion), packages removed then purged, modprobe loads the stock $STOCK"
	;;
*) sed -n '2,21p' "$0" | sed 's/^# \?//'; exit 2 ;;
esac
