#!/bin/bash
# migrate-compress.sh: adaptive zstd compression.  On a slow link (8 MB/s
# cap) compressible blocks go compressed by default (--compress auto): the
# wire carries well under the data; random (incompressible) blocks go raw;
# --compress=off sends everything raw; --compress=bad is refused.  Every
# destination image is verified.
. "$(dirname "$0")/lib.sh"
requires base64
# 24 MiB of compressible data (text), then 8 MiB random
{ for i in $(seq 1 24); do
      yes "incmig block $i: the same sentence again and again, compressible" | head -c $((1 << 20))
  done
  head -c $((8 << 20)) /dev/urandom
} >"$T/src.img"
cp "$T/src.img" "$T/src.img.orig"

run() {
    rm -f "$T/dst.img" "$T/journal" "$T/report.json"
    start_serve "$T/src.img"
    start_guest 0 --read-rate 0
    start_receiver
    run_migrate --bandwidth 8M "$@" || fail "migration failed ($*)"
    stop_guest
    wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
    verify_image "$T/dst.img"
}

run
zin=$(json compressed_in_bytes); zout=$(json compressed_out_bytes)
wire=$(json wire_bytes)
echo "auto: $zin bytes compressed to $zout, $wire on the wire"
fcmp "$zin" '>=' $((20 << 20)) || fail "only $zin bytes compressed on a slow link"
fcmp "$zin" '<=' $((25 << 20)) || fail "$zin bytes compressed: random blocks too?"
fcmp "$wire" '<=' $((14 << 20)) || fail "$wire bytes on the wire for 24 MiB of text + 8 random"

run --compress=off
echo "off: $(json compressed_in_bytes) compressed, $(json wire_bytes) on the wire"
[ "$(json compressed_in_bytes)" = 0 ] || fail "--compress=off compressed"
fcmp "$(json wire_bytes)" '>=' $((32 << 20)) || fail "--compress=off: less than the data on the wire"

"$XL_INCMIG" migrate --compress=bad sim:x 127.0.0.1:1 2>"$T/bad.log" &&
    fail "--compress=bad accepted"
grep -q "bad --compress" "$T/bad.log" || fail "no clear error: $(cat "$T/bad.log")"
echo PASS
