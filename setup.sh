#!/bin/sh
# setup.sh: the README's quick start.  On a fresh Debian 12 machine, as root:
#   ./setup.sh demo    install what is missing, build, run a live migration
#                      of the built-in simulated guest and print its figures
#   ./setup.sh test    install what is missing, build, run the test suite:
#                      a -Werror build with `make check`, the same suite
#                      under ASan+UBSan, a short run of each fuzzer, and
#                      the nested Xen lab's smoke test (INCMIG_SKIP_LAB=1
#                      leaves it out)
# Other targets: build, bench, bench-quick, lab, lab-check (see README).
set -eu
cd "$(dirname "$0")"
TOP=$(pwd)
JOBS=$(nproc 2>/dev/null || echo 2)

PKGS="build-essential autoconf automake libtool pkg-config \
  libaio-dev zlib1g-dev libxxhash-dev libzstd-dev libgnutls28-dev gnutls-bin libcmocka-dev libnbd-dev libnbd-bin nbdkit qemu-utils \
  libxen-dev clang libclang-rt-14-dev openssh-server openssh-client \
  python3 groff-base util-linux e2fsprogs"

install_deps() {
    missing=""
    for p in $PKGS "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: missing packages:$missing; run as root (or install them)" >&2
        exit 1
    fi
    echo "setup.sh: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

configure_in() {   # configure_in DIR [configure options]
    dir=$1; shift
    [ -x configure ] || autoreconf -fi >/dev/null
    mkdir -p "$dir"
    if [ ! -f "$dir/Makefile" ] || [ configure -nt "$dir/Makefile" ]; then
        (cd "$dir" && "$TOP/configure" -q "$@")
    fi
}

build() {
    configure_in build --enable-werror
    make -s -C build -j"$JOBS"
}

# The Debian packages (debian/build-debs.sh, also the lab's deploy-debs):
# built from a copy of the tree in build/deb/src, .debs in build/deb/, then
# lintian.  Fails on a build failure or a lintian error; warnings are
# printed, not fatal.
DEB_PKGS="debhelper dh-dkms lintian"
# `make xl-patched` (tools/xl-patch): xen's source, xl against libxen-dev
XL_PKGS="dpkg-dev libyajl-dev uuid-dev"

case "${1:-}" in
demo)
    install_deps
    build
    shift
    exec ./build/tools/xl-incmig demo "$@"
    ;;
test)
    install_deps
    build
    echo "== make check (warnings are errors)"
    make -s -C build -j"$JOBS" check || { cat build/tests/test-suite.log; exit 1; }
    echo "== make check under ASan+UBSan"
    configure_in build-asan --enable-werror --enable-sanitizers
    make -s -C build-asan -j"$JOBS"
    ASAN_OPTIONS=detect_leaks=1 make -s -C build-asan -j"$JOBS" check ||
        { cat build-asan/tests/test-suite.log; exit 1; }
    echo "== fuzzers, ${FUZZ_SECONDS:-30} s each"
    make -s -C build/tests fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
    echo "== Debian packages: dpkg-buildpackage, lintian (build/deb)"
    install_deps $DEB_PKGS
    JOBS=$JOBS debian/build-debs.sh build/deb || exit 1
    echo "== the patched xl: make xl-patched (build/xl-patched/xl)"
    install_deps $XL_PKGS
    if ! make -s -C build xl-patched >build/xl-patched.log 2>&1; then
        [ -f build/xl-patched/download-failed ] || { tail -30 build/xl-patched.log; exit 1; }
        echo "SKIP xl-patched: $(cat build/xl-patched/download-failed)"
    fi
    # the lab's results, one line each: "PASS|FAIL|SKIP NAME ... [-- why]"
    : >build/lab-smoke.results
    lab_rc=0
    if [ "${INCMIG_SKIP_LAB:-0}" = 1 ]; then
        echo "== nested Xen lab smoke: skipped (INCMIG_SKIP_LAB=1)"
        echo "SKIP lab-smoke -- INCMIG_SKIP_LAB=1" >build/lab-smoke.results
    else
        # Xen under QEMU (TCG): build (cached in /var/tmp/incmig-lab), boot
        # one host, xl save/restore, a localhost migration of the PV test
        # guest and the blkback write bitmap (tests/lab/README.md).  An
        # emulated boot can fail for reasons of its own, so one failed run
        # is tried again (the log says so); not when a lab build step
        # failed (test 40's "lab build step ... failed"), which would fail
        # the same way again.
        echo "== nested Xen lab smoke (tests/lab/lab.sh smoke: the one-host tests)"
        if ! tests/lab/lab.sh smoke >build/lab-smoke.log 2>&1; then
            tail -20 build/lab-smoke.log
            if grep -q '^FAIL .* -- lab build step' build/lab-smoke.log; then
                echo "setup.sh: the lab smoke failed: a lab build step failed (not retried)"
                lab_rc=1
            else
                echo "setup.sh: the lab smoke failed once; running it again"
                tests/lab/lab.sh smoke >build/lab-smoke.log 2>&1 ||
                    { tail -40 build/lab-smoke.log; lab_rc=1; }
            fi
        fi
        grep -E '^(PASS|FAIL|SKIP) [0-9]' build/lab-smoke.log | sort -u | sort -k2,2 >build/lab-smoke.results || true
        # failed before any test ran (build, boot): one failure, and why
        [ "$lab_rc" = 0 ] || grep -q '^FAIL ' build/lab-smoke.results ||
            echo "FAIL lab-smoke -- $(grep -a 'ERROR: ' build/lab-smoke.log | tail -n 1 |
                sed 's/.*ERROR: //') (build/lab-smoke.log)" >>build/lab-smoke.results
        cat build/lab-smoke.results
    fi
    count() { sed -n "s/^# $1: *//p" "$2" | head -n 1; }
    # names of skipped tests: the "SKIP: NAME" section titles of test-suite.log
    skips() { awk -v tag="$2" '/^=+$/ && p ~ /^SKIP: / && length($0) == length(p) {
        print "  " substr(p, 7) tag } { p = $0 }' "$1"; }
    passed=0 failed=0 skipped=0
    for log in build/tests/test-suite.log build-asan/tests/test-suite.log; do
        passed=$((passed + $(count PASS "$log")))
        failed=$((failed + $(count FAIL "$log") + $(count ERROR "$log")))
        skipped=$((skipped + $(count SKIP "$log")))
    done
    passed=$((passed + $(grep -c '^PASS ' build/lab-smoke.results || true)))
    failed=$((failed + $(grep -c '^FAIL ' build/lab-smoke.results || true)))
    skipped=$((skipped + $(grep -c '^SKIP ' build/lab-smoke.results || true)))
    echo "tests: $passed passed, $failed failed, $skipped skipped"
    if [ "$skipped" -gt 0 ]; then
        echo "skipped:"
        skips build/tests/test-suite.log ""
        skips build-asan/tests/test-suite.log " (ASan+UBSan)"
        sed -n 's/^SKIP \([^ ]*\) .*-- \(.*\)/  lab: \1 (\2)/p' build/lab-smoke.results
    fi
    if grep -q '^FAIL ' build/lab-smoke.results; then
        echo "failed in the lab:"
        sed -n 's/^FAIL \([^ ]*\) .*-- \(.*\)/  lab: \1: \2/p' build/lab-smoke.results
        exit 1
    fi
    ;;
build)
    install_deps
    build
    ;;
bench|bench-quick)
    install_deps qemu-system-common
    build
    make -C build "$1"
    ;;
lab|lab-check)
    install_deps
    build
    make -C build "$1"
    ;;
*)
    sed -n '2,10p' "$0" >&2
    exit 2
    ;;
esac
