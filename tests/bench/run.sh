#!/bin/sh
# run.sh: the benchmark entry point (`make bench`, `make bench-quick`).
#   run.sh [--quick|--full] [--sizes 1,4,16] [--out DIR] [--work DIR]
#          [--time-limit S] [--tools T,...] [--estimate-only] [--keep]
# Builds the two helpers (countproxy, mkimg) with cc into the build tree
# (or $TMPDIR), checks for the reference tools and runs bench.py.
# XL_INCMIG: the xl-incmig binary (default: the build tree beside us).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
XL_INCMIG=${XL_INCMIG:-}
if [ -z "$XL_INCMIG" ]; then
    for c in "$here/../../build/tools/xl-incmig" "$here/../../tools/xl-incmig" \
             "$(pwd)/../tools/xl-incmig"; do
        [ -x "$c" ] && { XL_INCMIG=$(cd "$(dirname "$c")" && pwd)/xl-incmig; break; }
    done
fi
[ -x "${XL_INCMIG:-}" ] || { echo "run.sh: set XL_INCMIG to the xl-incmig binary" >&2; exit 2; }
for t in python3 qemu-storage-daemon qemu-img nbdcopy cc; do
    command -v "$t" >/dev/null 2>&1 || { echo "run.sh: $t not found (SKIP)" >&2; exit 77; }
done
bin=${BENCH_BUILDDIR:-$(dirname "$XL_INCMIG")/../tests/bench}
mkdir -p "$bin" 2>/dev/null && [ -w "$bin" ] || bin=${TMPDIR:-/tmp}/incmig-bench-bin
mkdir -p "$bin"
for p in countproxy mkimg; do
    if [ ! -x "$bin/$p" ] || [ "$here/$p.c" -nt "$bin/$p" ]; then
        cc -O2 -Wall -pthread -o "$bin/$p" "$here/$p.c"
    fi
done
exec python3 "$here/bench.py" --xl-incmig "$XL_INCMIG" \
    --countproxy "$bin/countproxy" --mkimg "$bin/mkimg" "$@"
