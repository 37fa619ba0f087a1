#!/bin/bash
# build-image.sh: the dom0 root disk image, made from the rootfs tree without
# loop mounts (mkfs.ext4 -d).  Each boot uses a qcow2 overlay on it.
# Output: $LAB/out/base.raw (sparse, INCMIG_LAB_IMGSIZE, default 4G)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
rm -f "$LAB/out/base.raw.tmp"
truncate -s "${INCMIG_LAB_IMGSIZE:-4G}" "$LAB/out/base.raw.tmp"
mkfs.ext4 -q -F -L labroot -d "$LAB/work/rootfs" "$LAB/out/base.raw.tmp"
mv "$LAB/out/base.raw.tmp" "$LAB/out/base.raw"
du -h --apparent-size "$LAB/out/base.raw"; du -h "$LAB/out/base.raw"
