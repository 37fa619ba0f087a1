#!/bin/bash
# build-xl.sh SRCDIR BUILDDIR OUT: the patched xl of Debian 12's Xen.
#
# Gets Debian's xen source package the way tests/lab/build-xen.sh does
# (aptsrc of tests/lab/lib.sh: the machine's mirror, bookworm, private apt
# state under OUT), applies this folder's quilt series on top of Debian's
# own (as the xen package would: patch -p1, no fuzz), and builds only
# tools/xl: its .c files compiled against the system's libxen-dev and
# linked with this tree's libincmig (BUILDDIR/libxl-ext/.libs).  Output, in OUT:
#   xl        the patched xl, for dom0: install it as
#             /usr/lib/xen-4.17/bin/xl (Debian's /usr/sbin/xl runs that);
#             it needs libincmig.so.0 (package libincmig0)
#   xl-nohv   the same objects with main() replaced by xl-nohv.c, which
#             runs `help`, `migrate --incremental-storage` and
#             `migrate-receive --incremental-storage` without Xen (xl's
#             own main needs a libxl context, so Xen, even for `help`)
#   xen.version  the source package's version
# Then it checks what it can without Xen: the patched help text, the
# library's usage line through xl's main_migrate, and that xl links the two
# entry points.  Exit status: 0 built and checked, 1 failed, 77 the
# download failed (a cause outside the project).
set -euo pipefail
SRCDIR=$(cd "$1" && pwd)
BUILDDIR=$(cd "$2" && pwd)
mkdir -p "$3"
OUT=$(cd "$3" && pwd)
PATCHDIR=$SRCDIR/tools/xl-patch
LIBDIR=$BUILDDIR/libxl-ext/.libs
[ -f "$LIBDIR/libincmig.so" ] || { echo "build-xl: no $LIBDIR/libincmig.so: run make first" >&2; exit 1; }
for h in /usr/include/libxl.h /usr/include/libxlutil.h /usr/include/yajl/yajl_gen.h /usr/include/uuid/uuid.h; do
    [ -f "$h" ] || { echo "build-xl: $h missing: apt-get install libxen-dev libyajl-dev uuid-dev" >&2; exit 1; }
done
for t in dpkg-source patch objcopy; do
    command -v "$t" >/dev/null || { echo "build-xl: $t missing (dpkg-dev, patch, binutils)" >&2; exit 1; }
done

# ---- the source package (kept in OUT: 5 MB; the tree is rebuilt each time)
export INCMIG_LAB_DIR=$OUT/apt
. "$SRCDIR/tests/lab/lib.sh"
cd "$OUT"
if ! ls xen_*.dsc >/dev/null 2>&1; then
    log "downloading Debian's xen source package"
    if ! { aptsrc update -q >apt.log 2>&1 &&
           aptsrc source -q --download-only xen >>apt.log 2>&1; }; then
        echo "build-xl: cannot download Debian's xen source (apt-get source" \
             "from $(mirror)): $(tail -2 apt.log)" | tee download-failed >&2
        exit 77
    fi
fi
rm -f download-failed
dsc=$(ls xen_*.dsc | head -1)
ver=${dsc#xen_}; ver=${ver%.dsc}
abi=$(echo "$ver" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
rm -rf src obj
dpkg-source -q -x "$dsc" src >/dev/null 2>&1 || { echo "build-xl: dpkg-source -x $dsc failed" >&2; exit 1; }

# ---- the patch, on top of Debian's series (dpkg-source applied that),
# exactly as quilt would push it: -p1, no fuzz, refused if it does not
# apply as it is
while read -r p; do
    case $p in ''|'#'*) continue ;; esac
    cp "$PATCHDIR/$p" src/debian/patches/
    echo "$p" >>src/debian/patches/series
    (cd src && patch -p1 --fuzz=0 --no-backup-if-mismatch -s <"debian/patches/$p") >patch.log 2>&1 || {
        echo "build-xl: $p does not apply to xen $ver:" >&2; cat patch.log >&2; exit 1; }
done <"$PATCHDIR/series"

# ---- tools/xl alone, against libxen-dev: Xen's tools flags, Debian's
# paths (debian/rules configures --prefix=/usr --sysconfdir=/etc
# --localstatedir=/var, libexec leaf xen-ABI)
mkdir -p obj inc
ln -sfn "$OUT/src/tools/include/xen-tools" inc/xen-tools   # xen-tools/libs.h only
cat >obj/config.h <<E2
#define XEN_CONFIG_DIR "/etc/xen"
#define XEN_SCRIPT_DIR "/etc/xen/scripts"
#define XEN_LOCK_DIR "/var/lock"
#define XEN_RUN_DIR "/var/run/xen"
#define XEN_LIB_DIR "/var/lib/xen"
#define XEN_DUMP_DIR "/var/lib/xen/dump"
#define XEN_LOG_DIR "/var/log/xen"
#define LIBEXEC_BIN "/usr/lib/xen-$abi/bin"
#define XENFIRMWAREDIR "/usr/lib/xen-$abi/boot"
#define HAVE_YAJL_YAJL_VERSION_H 1
E2
CFLAGS="-O2 -g -std=gnu99 -fPIC -fno-strict-aliasing -Wall -Werror
 -Wstrict-prototypes -Wno-unused-but-set-variable
 -Wno-unused-local-typedefs -Wno-format-zero-length -Wmissing-declarations
 -Wformat-nonliteral -Wshadow -D__XEN_TOOLS__ -D_LARGEFILE_SOURCE
 -D_LARGEFILE64_SOURCE -include $OUT/obj/config.h -I$OUT/inc
 -I$SRCDIR/libxl-ext -I$OUT/src/tools/xl"
for c in src/tools/xl/*.c; do
    o=obj/$(basename "$c" .c).o
    ${CC:-cc} $CFLAGS -c -o "$o" "$c" || { echo "build-xl: compiling $c failed" >&2; exit 1; }
done
LIBS="-L$LIBDIR -lincmig -lxlutil -lxenlight -lxentoollog -lyajl -lpthread"
${CC:-cc} -o xl.tmp obj/*.o $LIBS
objcopy --redefine-sym main=xl_main_needs_xen obj/xl.o obj/xl-renamed.o
${CC:-cc} $CFLAGS -std=gnu99 -c -o obj/xl-nohv-main.o "$PATCHDIR/xl-nohv.c"
${CC:-cc} -o xl-nohv.tmp obj/xl-nohv-main.o obj/xl-renamed.o \
    $(ls obj/*.o | grep -v -e '/xl\.o$' -e 'xl-renamed' -e 'xl-nohv-main') $LIBS \
    -Wl,-rpath,"$LIBDIR"
mv xl.tmp xl
mv xl-nohv.tmp xl-nohv
echo "$ver" >xen.version

# ---- checks without Xen
fail() { echo "build-xl: check failed: $*" >&2; exit 1; }
nm -D --undefined-only xl >xl.undefined
for sym in incmig_migrate_main incmig_receive_main; do
    grep -qw "$sym" xl.undefined || fail "xl does not call $sym"
done
./xl-nohv help migrate >help-migrate.txt
grep -q -- '--incremental-storage' help-migrate.txt || fail "xl help migrate lacks --incremental-storage"
./xl-nohv help migrate-receive >help-receive.txt
grep -q -- '--incremental-storage' help-receive.txt || fail "xl help migrate-receive lacks it"
./xl-nohv migrate --incremental-storage --help >usage.txt
grep -q '^usage: xl migrate --incremental-storage \[options\] DOMAIN HOST' usage.txt ||
    fail "xl migrate --incremental-storage --help: not libincmig's usage: $(head -2 usage.txt)"
grep -q 'xl migrate-receive --incremental-storage' usage.txt ||
    fail "the receiver xl starts over ssh is not xl migrate-receive --incremental-storage"
rc=0; ./xl-nohv migrate --incremental-storage --policy fast d h 2>err.txt || rc=$?
[ $rc = 2 ] && grep -q "unknown --policy 'fast'" err.txt || fail "a bad option: status $rc, $(cat err.txt)"
rm -rf src       # 38 MB unpacked; the .dsc and tarballs stay for the next build
echo "build-xl: $OUT/xl built from xen $ver + $(tr '\n' ' ' <"$PATCHDIR/series")against libxen-dev $(dpkg-query -W -f='${Version}' libxen-dev 2>/dev/null)"
