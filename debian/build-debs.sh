#!/bin/sh
# debian/build-debs.sh OUTDIR: the four Debian packages of this tree, then
# lintian on them.  Run by `./setup.sh test` (OUTDIR build/deb) and by the
# lab's `lab.sh deploy-debs N` (the .debs it installs in dom0).
#
# The packages are built from a copy of the tree's files in OUTDIR/src
# (what a clone would hold, with this tree's changes; the copy is also the
# build tree: tools/xl-patch/build-xl.sh links xl against the library built
# there), so nothing is built in the tree itself.  Output in OUTDIR:
#   *.deb, *.changes, *.buildinfo   dpkg-buildpackage -us -uc -b
#   build.log, lintian.log
# Exit status: 0 built and lintian found no error (warnings are printed,
# not fatal), 1 otherwise, with the reason.  Needs the Build-Depends of
# debian/control (dpkg-checkbuilddeps names the missing ones) and lintian.
set -eu
[ $# = 1 ] && [ -n "$1" ] || { echo "usage: $0 OUTDIR" >&2; exit 1; }
TOP=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
case $TOP/ in "$OUT"/*) echo "build-debs: OUTDIR $OUT holds the tree itself" >&2; exit 1 ;; esac
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

cd "$TOP"
missing=$(dpkg-checkbuilddeps 2>&1 | sed -n 's/.*Unmet build dependencies: //p')
[ -z "$missing" ] || { echo "build-debs: missing build dependencies: $missing" >&2; exit 1; }
command -v lintian >/dev/null || { echo "build-debs: lintian is not installed" >&2; exit 1; }

# only what this script made before: OUTDIR may hold other things
rm -rf "$OUT/src"
rm -f "$OUT"/*.deb "$OUT"/*.changes "$OUT"/*.buildinfo "$OUT/build.log" "$OUT/lintian.log"
mkdir -p "$OUT/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z -co --exclude-standard |
        tar --null -T - --ignore-failed-read -cf - | tar -xf - -C "$OUT/src"
else
    tar --exclude=./build --exclude='./build-*' -cf - . | tar -xf - -C "$OUT/src"
fi

t0=$(date +%s)
if ! (cd "$OUT/src" && DEB_BUILD_OPTIONS="parallel=$JOBS noddebs" \
        dpkg-buildpackage -us -uc -b) >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    echo "build-debs: dpkg-buildpackage failed ($OUT/build.log)" >&2
    exit 1
fi
t1=$(date +%s)
echo "dpkg-buildpackage -us -uc -b: $((t1 - t0)) s, $(sed -n 's/^# PASS: *//p' \
    "$OUT/src/tests/test-suite.log" 2>/dev/null || echo 0) unit/ABI tests passed"
(cd "$OUT" && ls -s --block-size=K ./*.deb)
lrc=0
lintian --fail-on error "$OUT"/*.changes >"$OUT/lintian.log" 2>&1 || lrc=$?
echo "lintian ($(($(date +%s) - t1)) s): $(grep -c '^E: ' "$OUT/lintian.log") errors," \
    "$(grep -c '^W: ' "$OUT/lintian.log") warnings"
cat "$OUT/lintian.log"
[ "$lrc" = 0 ] || { echo "build-debs: lintian failed (rc=$lrc, $OUT/lintian.log)" >&2; exit 1; }
