#!/bin/bash
# build-blkback.sh: incmig's patched xen-blkback (blkback-patch/) built for
# the dom0 kernel (out/kversion), from a copy of blkback-patch/ in
# $LAB/work/blkback (nothing is built in the repository).  Needs this
# machine's linux-headers-<dom0 kernel> and linux-source-6.1 of the same
# Debian version as dom0's linux-image (installed with apt-get if missing).
# Output: $LAB/out/xen-blkback-incmig.ko (test 40 loads it in dom0).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
K=$(cat "$LAB/out/kversion")
P=$(cd "$LABSRC/../../blkback-patch" && pwd)
W=$LAB/work/blkback
rm -f "$LAB/out/xen-blkback-incmig.ko"   # a failed build must not leave an old one for test 40
for f in Makefile Kbuild patches/series; do
	[ -f "$P/$f" ] || { echo "blkback-patch/$f is missing from this checkout (git ls-files blkback-patch)"; exit 1; }
done
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
# dom0's kernel package version, from the rootfs' dpkg database
V0=$(dpkg-query --admindir="$LAB/work/rootfs/var/lib/dpkg" -W -f='${Version}' "linux-image-$K")
echo "dom0 kernel: $K (linux-image $V0)"
missing=
[ "$(ver "linux-headers-$K")" = "$V0" ] || missing="$missing linux-headers-$K"
[ "$(ver linux-source-6.1)" = "$V0" ] || missing="$missing linux-source-6.1"
if [ -n "$missing" ]; then
	echo "installing$missing (=$V0)"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=900 --no-install-recommends \
		$(for p in $missing; do echo "$p=$V0"; done)
fi
for p in "linux-headers-$K" linux-source-6.1; do
	[ "$(ver "$p")" = "$V0" ] || { echo "$p is $(ver "$p"), dom0's kernel is $V0"; exit 1; }
done
rm -rf "$W"; mkdir -p "$W"
cp -r "$P/Makefile" "$P/Kbuild" "$P/patches" "$W/"
make -C "$W" KVER="$K" module
ko=$W/build/src/drivers/block/xen-blkback/xen-blkback.ko
[ "$(modinfo -F vermagic "$ko" | cut -d' ' -f1)" = "$K" ] || { echo "vermagic $(modinfo -F vermagic "$ko") is not $K"; exit 1; }
[ "$(modinfo -F incmig_tracking "$ko")" = 1 ] || { echo "no incmig_tracking in $ko"; exit 1; }
cp "$ko" "$LAB/out/xen-blkback-incmig.ko"
echo "$K $V0" >"$LAB/out/xen-blkback-incmig.version"
ls -la "$LAB/out/xen-blkback-incmig.ko"
