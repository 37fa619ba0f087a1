#!/bin/bash
# tls.sh: what TLS costs (`make bench-tls`).  The same idle image migrated
# over loopback TCP in clear, with PSK and with X.509, and the same export
# read by nbdcopy in clear and through STARTTLS (PSK), in one run; prints
# each time and its ratio to the clear run.  The reference: nbdkit's file
# plugin, clear and --tls=require --tls-psk, read the same way (its TLS
# line's ratio is to nbdkit's clear run, and a last line compares the two
# servers' TLS).  No cap: the link is the CPU.
#   tls.sh [MIB]   image size (default 256)
# XL_INCMIG: the xl-incmig binary.
MIB=${1:-256}
XL=${XL_INCMIG:?set XL_INCMIG to the xl-incmig binary}
# the tests' helpers: a private $T removed on exit, mk_psk, mk_x509, free_port
. "$(dirname "$0")/../integration/lib.sh"
requires nbdcopy
mk_psk "$T/keys.psk"
mk_x509 "$T/pki"
head -c $((MIB << 20)) /dev/urandom >"$T/src.img"
now() { date +%s.%N; }

# migrate_once OPTS...: seconds for one migration of the idle image
migrate_once() {
    rm -f "$T/dst.img"
    "$XL" serve --nbd "unix:$T/src.sock" --control "$T/src.ctl" "$@" "$T/src.img" 2>"$T/serve.log" &
    local sp=$!
    while [ ! -S "$T/src.ctl" ]; do sleep 0.05; done
    local port; port=$(free_port)
    "$XL" migrate-receive --listen "127.0.0.1:$port" --image "$T/dst.img" \
        --nbd "unix:$T/dst.sock" --exit-when-done "$@" 2>"$T/recv.log" &
    local rp=$!
    while ! grep -q 'waiting for the source' "$T/recv.log"; do sleep 0.05; done
    local t0; t0=$(now)
    "$XL" migrate -s "" --no-progress "$@" "sim:$T/src.ctl" "127.0.0.1:$port" >/dev/null 2>"$T/mig.log" ||
        { echo "migration failed ($*)" >&2; cat "$T/mig.log" >&2; exit 1; }
    wait "$rp" || true
    local t1; t1=$(now)
    kill "$sp" 2>/dev/null; wait "$sp" 2>/dev/null || true
    cmp -s "$T/src.img" "$T/dst.img" || { echo "images differ ($*)" >&2; exit 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}

# copy_once URI OPTS...: seconds for nbdcopy of the export to a file
copy_once() {
    local uri=$1; shift
    "$XL" serve --nbd "tcp:127.0.0.1:$NPORT" --control "$T/c.ctl" "$@" "$T/src.img" 2>"$T/cserve.log" &
    local sp=$!
    while [ ! -S "$T/c.ctl" ]; do sleep 0.05; done
    rm -f "$T/copy.img"
    local t0; t0=$(now)
    nbdcopy "$uri" "$T/copy.img"
    local t1; t1=$(now)
    kill "$sp"; wait "$sp" 2>/dev/null || true
    cmp -s "$T/src.img" "$T/copy.img" || { echo "copy differs" >&2; exit 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}

printf '%-26s %8s %9s %6s\n' run seconds MiB/s ratio
line() { awk -v n="$1" -v t="$2" -v p="$3" -v m="$MIB" \
    'BEGIN { printf "%-26s %8.2f %9.1f %6.2f\n", n, t, m / t, t / p }'; }
plain=$(migrate_once)
line "migrate, clear TCP" "$plain" "$plain"
t=$(migrate_once --tls-psk "$T/keys.psk"); line "migrate, TLS PSK" "$t" "$plain"
t=$(migrate_once --tls-x509 "$T/pki"); line "migrate, TLS X.509" "$t" "$plain"
NPORT=$(free_port)
plain=$(copy_once "nbd://127.0.0.1:$NPORT/")
line "nbdcopy, clear TCP" "$plain" "$plain"
NPORT=$(free_port)
tls=$(copy_once "nbds://incmig@127.0.0.1:$NPORT/?tls-psk-file=$T/keys.psk" --tls-psk "$T/keys.psk")
line "nbdcopy, STARTTLS PSK" "$tls" "$plain"

# nbdkit_once URI NBDKIT-OPTS...: the same copy from nbdkit
nbdkit_once() {
    local uri=$1; shift
    nbdkit -f -p "$NPORT" -i 127.0.0.1 "$@" file "$T/src.img" 2>"$T/nbdkit.log" &
    local np=$!
    wait_for "nbdinfo --can connect '$uri'" 10 || { echo "nbdkit did not start" >&2; exit 1; }
    rm -f "$T/copy.img"
    local t0; t0=$(now)
    nbdcopy "$uri" "$T/copy.img"
    local t1; t1=$(now)
    kill "$np"; wait "$np" 2>/dev/null || true
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
if command -v nbdkit >/dev/null && command -v nbdinfo >/dev/null; then
    NPORT=$(free_port)
    kplain=$(nbdkit_once "nbd://127.0.0.1:$NPORT/")
    line "nbdkit, clear TCP" "$kplain" "$kplain"
    NPORT=$(free_port)
    ktls=$(nbdkit_once "nbds://incmig@127.0.0.1:$NPORT/?tls-psk-file=$T/keys.psk" \
        --tls=require --tls-psk="$T/keys.psk")
    line "nbdkit, TLS PSK" "$ktls" "$kplain"
    line "incmig TLS / nbdkit TLS" "$tls" "$ktls"
else
    echo "(nbdkit or nbdinfo not found: no reference run)"
fi
