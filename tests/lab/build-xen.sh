#!/bin/bash
# build-xen.sh: rebuild the Xen hypervisor (xen/ only, not the tools) from
# Debian's own source package, with the configuration the lab needs:
#   CONFIG_SHADOW_PAGING=y          log-dirty for PV guests: live migration
#                                   (Debian's stock build has it off)
#   CONFIG_XEN_SHSTK=n, XEN_IBT=n   no CET: QEMU TCG does not emulate it
# Output: $LAB/out/xen (multiboot ELF for QEMU -kernel), xen.config, xen.version
set -euo pipefail
. "$(dirname "$0")/lib.sh"
W=$LAB/work/xen-src
rm -rf "$W"; mkdir -p "$W"
aptsrc update -q
cd "$W"
aptsrc source -q --download-only xen
dpkg-source -q -x xen_*.dsc src
ver=$(ls xen_*.dsc | sed 's/^xen_//; s/\.dsc$//')
cd src
cp debian/xen-kconfig xen/.config
cat >>xen/.config <<'E2'
# CONFIG_XEN_SHSTK is not set
# CONFIG_XEN_IBT is not set
CONFIG_SHADOW_PAGING=y
E2
make -C xen olddefconfig XEN_TARGET_ARCH=x86_64
grep -q '^CONFIG_SHADOW_PAGING=y' xen/.config || { echo "shadow paging not enabled"; exit 1; }
grep -q '^CONFIG_XEN_SHSTK=y' xen/.config && { echo "CET still enabled"; exit 1; }
make -C xen -j"$(nproc)" XEN_TARGET_ARCH=x86_64
cp xen/xen "$LAB/out/xen.tmp" && mv "$LAB/out/xen.tmp" "$LAB/out/xen"
cp xen/.config "$LAB/out/xen.config"
echo "$ver" >"$LAB/out/xen.version"
cd / && rm -rf "$W"      # 250 MB of source: not worth keeping
echo "built xen $ver"
