#!/bin/bash
# hook-block-incmig.sh: xenstore-hooks/block-incmig against a fake dom0
# (its override variables: a directory as xenstore, whose writes of
# incmig-track-block-size blkback's answer follows; a directory as sysfs;
# a directory as the kernel's parked bitmaps; `true` as Debian's block).
#  1. remove saves the parked bitmap with its generation and the volume's
#     stat, drops it from the kernel; add restores it under the same key
#     (the volume's resolved path: reached through a symlinked directory
#     here), switches tracking on and proves the generation;
#  2. the volume written while no VBD tracked it: bitmap loaded, no
#     generation;
#  3. saved without a generation (the VBD had no proof): none after;
#  4. blkback refuses the load: no generation, the files used once;
#  5. the key is what libincmig's Xen target writes (sha256 of the
#     resolved path; the C side is checked in unit/test-xen-target).
. "$(dirname "$0")/lib.sh"
requires sha256sum
requires realpath
HOOK=$(cd "${TESTS_SRCDIR:-$(dirname "$0")/..}/.." && pwd)/xenstore-hooks/block-incmig
[ -x "$HOOK" ] || fail "no block-incmig at $HOOK"

# libxl runs hotplug scripts with XENBUS_PATH relative to dom0's home, as
# xenstore-read/-write resolve it (the fakes below do the same)
BE=/local/domain/0/backend/vbd/7/51712 BE_REL=backend/vbd/7/51712
XS=$T/xs SYS=$T/sysroot VBD=$T/sysroot/sys/bus/xen-backend/devices/vbd-7-51712
mkdir -p "$XS" "$T/parked/parked" "$T/bitmaps" "$T/real" "$VBD"
ln -s "$T/real" "$T/link"
cat >"$T/xs-read" <<E
#!/bin/sh
p=\$1; case \$p in /*) ;; *) p=/local/domain/0/\$p ;; esac
[ -f "$XS\$p" ] && cat "$XS\$p"
E
cat >"$T/xs-write" <<E
#!/bin/sh
p=\$1; case \$p in /*) ;; *) p=/local/domain/0/\$p ;; esac
mkdir -p "\$(dirname "$XS\$p")" && printf '%s' "\$2" >"$XS\$p"
case \$p in */incmig-track-block-size) printf '%s' "\$2" >"\$(dirname "$XS\$p")/incmig-tracking" ;; esac
E
chmod +x "$T/xs-read" "$T/xs-write"
export INCMIG_BLOCK_SCRIPT=true INCMIG_BITMAP_DIR=$T/bitmaps INCMIG_PARKED_DIR=$T/parked \
    INCMIG_SYSFS_ROOT=$SYS XS_READ=$T/xs-read XS_WRITE=$T/xs-write \
    INCMIG_HOOK_LOG=$T/hook.log XENBUS_PATH=$BE_REL
xsr() { cat "$XS$BE/$1" 2>/dev/null; }
fresh_vbd() {   # a new VBD on PARAMS: empty backend dir, empty sysfs files
    rm -rf "$XS$BE"; mkdir -p "$XS$BE"; printf '%s' "$1" >"$XS$BE/params"
    rm -rf "$VBD"; mkdir -p "$VBD"; : >"$VBD/incmig_bitmap_load"; : >"$VBD/incmig_control"
}
# park KEY: blkback parked this VBD's bitmap (what it does when the VBD goes)
park() {
    head -c 33 /dev/urandom >"$T/parked/parked/$1"; cp "$T/parked/parked/$1" "$T/parked.bits"
    echo "$1 4096 257" >"$T/parked/list"; : >"$T/parked/drop"
}
G=0123456789abcdef0123456789abcdef
head -c 1052160 /dev/urandom >"$T/real/vol.img"
vol=$T/real/vol.img
key=p-$(printf '%s' "$vol" | sha256sum | cut -c1-32)

# ---- 1. a domain shut down and started again keeps its history
fresh_vbd "$T/link/vol.img"
"$HOOK" add || fail "add"
[ "$(xsr incmig-track-key)" = "$key" ] || fail "key $(xsr incmig-track-key), expected $key (sha256 of the resolved path)"
[ "$(xsr incmig-track-volume)" = "$vol" ] || fail "volume node $(xsr incmig-track-volume)"
[ -z "$(xsr incmig-track-block-size)" ] || fail "tracking switched on with no saved bitmap"
echo "$G" >"$XS$BE/incmig-track-gen"       # what the Xen target writes
park "$key"
"$HOOK" remove || fail "remove"
[ -f "$T/bitmaps/$key.bits" ] && cmp -s "$T/bitmaps/$key.bits" "$T/parked.bits" || fail "bitmap not saved"
[ "$(cat "$T/bitmaps/$key.bs")" = 4096 ] || fail "block size not saved"
read -r g st <"$T/bitmaps/$key.gen" || fail "generation not saved"
[ "$g" = "$G" ] && [ "$st" = "$(stat -L -c '%s %i %.9Y %.9Z' "$vol")" ] || fail "KEY.gen: $g $st"
[ "$(cat "$T/parked/drop")" = "$key" ] || fail "the parked bitmap was not dropped"
ls "$T/bitmaps" | grep -q tmp && fail "temporary files left: $(ls "$T/bitmaps")"
fresh_vbd "$T/link/vol.img"
"$HOOK" add || fail "add after remove"
[ "$(xsr incmig-track-block-size)" = 4096 ] || fail "tracking not switched back on"
cmp -s "$VBD/incmig_bitmap_load" "$T/parked.bits" || fail "the saved bitmap was not loaded"
[ "$(cat "$VBD/incmig_control")" = load ] || fail "no load command"
[ "$(xsr incmig-track-gen)" = "$G" ] || fail "generation not proven: $(cat "$T/hook.log")"
[ -z "$(ls "$T/bitmaps")" ] || fail "saved files not used once: $(ls "$T/bitmaps")"

# ---- 2. written while no VBD tracked it
park "$key"
"$HOOK" remove || fail "remove 2"
sleep 0.01; dd if=/dev/zero of="$vol" bs=4096 seek=3 count=1 conv=notrunc status=none
fresh_vbd "$vol"
"$HOOK" add || fail "add 2"
cmp -s "$VBD/incmig_bitmap_load" "$T/parked.bits" || fail "bitmap 2 not loaded"
[ -z "$(xsr incmig-track-gen)" ] || fail "a volume written behind the hook's back kept its generation"
grep -q "changed since its bitmap was saved" "$T/hook.log" || fail "no reason logged: $(cat "$T/hook.log")"

# ---- 3. saved without a generation
rm -f "$XS$BE/incmig-track-gen"
park "$key"
"$HOOK" remove || fail "remove 3"
[ -f "$T/bitmaps/$key.bits" ] && [ ! -e "$T/bitmaps/$key.gen" ] || fail "3: $(ls "$T/bitmaps")"
fresh_vbd "$vol"
"$HOOK" add || fail "add 3"
[ -z "$(xsr incmig-track-gen)" ] || fail "a generation from nowhere"
[ "$(xsr incmig-track-block-size)" = 4096 ] || fail "3: tracking not on"

# ---- 4. blkback refuses the load
echo "$G" >"$XS$BE/incmig-track-gen"
park "$key"
"$HOOK" remove || fail "remove 4"
fresh_vbd "$vol"
rm -f "$VBD/incmig_control"; mkdir "$VBD/incmig_control"    # writes fail
"$HOOK" add || fail "add 4"
[ -z "$(xsr incmig-track-gen)" ] || fail "a generation over a bitmap that was not loaded"
grep -q "loading the bitmap $key failed" "$T/hook.log" || fail "4: $(cat "$T/hook.log")"
grep -q "loading the bitmap $key failed (.*incmig_control: Is a directory)" "$T/hook.log" ||
    fail "4: the log does not say why the load failed: $(cat "$T/hook.log")"
[ -z "$(ls "$T/bitmaps")" ] || fail "4: saved files left: $(ls "$T/bitmaps")"

# ---- nothing parked: remove saves nothing
rm -f "$T/parked/parked/$key"
printf 0 >"$XS$BE/incmig-tracking"
"$HOOK" remove || fail "remove 5"
[ -z "$(ls "$T/bitmaps")" ] || fail "saved a bitmap that was not parked"
echo "PASS hook-block-incmig"
