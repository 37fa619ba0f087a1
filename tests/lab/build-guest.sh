#!/bin/bash
# build-guest.sh: the PV test guest: the dom0's own Debian kernel (PV-capable)
# and a busybox initramfs whose /init is guest/init (the workload).
# Output: $LAB/out/guest-vmlinuz, $LAB/out/guest-initrd.gz
set -euo pipefail
. "$(dirname "$0")/lib.sh"
R=$LAB/work/rootfs
K=$(cat "$LAB/out/kversion")
W=$LAB/work/guest-initrd
rm -rf "$W"; mkdir -p "$W"/{bin,dev,proc,sys,lib,tmp}
cp /bin/busybox "$W/bin/busybox"
m=$(find "$R/lib/modules/$K" -name 'xen-blkfront.ko*' | head -1)
[ -n "$m" ] || { echo "xen-blkfront module not found in the rootfs"; exit 1; }
case $m in
*.xz) xz -dc "$m" >"$W/lib/xen-blkfront.ko" ;;
*.zst) zstd -dc "$m" >"$W/lib/xen-blkfront.ko" ;;
*) cp "$m" "$W/lib/xen-blkfront.ko" ;;
esac
cp "$LABSRC/guest/init" "$W/init"; chmod +x "$W/init"
(cd "$W" && find . | cpio -o -H newc --quiet | gzip -9) >"$LAB/out/guest-initrd.gz"
cp "$R/boot/vmlinuz-$K" "$LAB/out/guest-vmlinuz"
rm -rf "$W"
ls -la "$LAB/out/guest-initrd.gz" "$LAB/out/guest-vmlinuz"
