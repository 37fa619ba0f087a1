#!/bin/bash
# tls-nbd.sh: NBD over TCP with keys follows NBD's STARTTLS, so libnbd's
# and QEMU's clients work: nbdinfo/nbdcopy and qemu-img with the PSK file
# or the certificates read the export; a client without TLS is told TLS is required; one with
# another key is refused.
. "$(dirname "$0")/lib.sh"
requires nbdinfo
requires nbdcopy
mk_psk "$T/keys.psk"
mk_psk "$T/other.psk"
mk_x509 "$T/pki"
head -c 4M /dev/urandom >"$T/src.img"

# serve_tcp OPTS...: the image on 127.0.0.1:$NPORT
serve_tcp() {
    NPORT=$(free_port)
    bg "$XL_INCMIG" serve --nbd "tcp:127.0.0.1:$NPORT" --control "$T/ctl" "$@" "$T/src.img" 2>"$T/serve.log"
    SP=$LASTPID
    wait_for "[ -S '$T/ctl' ]" 10 || fail "serve did not start"
}

serve_tcp --tls-psk "$T/keys.psk"
URI="nbds://incmig@127.0.0.1:$NPORT/?tls-psk-file=$T/keys.psk"
[ "$(nbdinfo --size "$URI")" = 4194304 ] || fail "nbdinfo over TLS (PSK)"
nbdcopy "$URI" "$T/copy.img" || fail "nbdcopy over TLS (PSK)"
cmp "$T/src.img" "$T/copy.img" || fail "the copy over TLS differs"
nbdinfo --size "nbd://127.0.0.1:$NPORT/" 2>"$T/plain.err" && fail "a plain client was served"
grep -qi "requires TLS" "$T/plain.err" || fail "plain client: $(cat "$T/plain.err")"
nbdinfo --size "nbds://incmig@127.0.0.1:$NPORT/?tls-psk-file=$T/other.psk" 2>/dev/null &&
    fail "a client with another key was served"
wait_for "grep -q 'refused an NBD client: TLS (PSK) handshake failed' '$T/serve.log'" 5 ||
    fail "no clear refusal of the wrong key: $(cat "$T/serve.log")"
# QEMU's client, with its tls-creds-psk object (a directory holding keys.psk)
if command -v qemu-img >/dev/null; then
    mkdir "$T/qpsk" && cp "$T/keys.psk" "$T/qpsk/"
    qemu-img info --object "tls-creds-psk,id=tls0,dir=$T/qpsk,endpoint=client,username=incmig" \
        --image-opts "driver=nbd,host=127.0.0.1,port=$NPORT,tls-creds=tls0" >"$T/qemu.out" 2>&1 ||
        fail "qemu-img over TLS (PSK): $(cat "$T/qemu.out")"
    grep -q "4194304 bytes" "$T/qemu.out" || fail "qemu-img: $(cat "$T/qemu.out")"
else
    echo "qemu-img not found: QEMU's TLS client not checked"
fi
kill "$SP"; wait "$SP" 2>/dev/null || true

serve_tcp --tls-x509 "$T/pki"
rm -f "$T/copy.img"
nbdcopy "nbds://127.0.0.1:$NPORT/?tls-certificates=$T/pki" "$T/copy.img" ||
    fail "nbdcopy over TLS (X.509)"
cmp "$T/src.img" "$T/copy.img" || fail "the copy over TLS (X.509) differs"
if command -v qemu-img >/dev/null; then
    qemu-img info --object "tls-creds-x509,id=tls0,dir=$T/pki,endpoint=client" \
        --image-opts "driver=nbd,host=127.0.0.1,port=$NPORT,tls-creds=tls0" >"$T/qemu.out" 2>&1 ||
        fail "qemu-img over TLS (X.509): $(cat "$T/qemu.out")"
    grep -q "4194304 bytes" "$T/qemu.out" || fail "qemu-img: $(cat "$T/qemu.out")"
fi
kill "$SP"; wait "$SP" 2>/dev/null || true

# plain NBD over TCP off loopback needs --tls=off
"$XL_INCMIG" serve --nbd "tcp:0.0.0.0:$(free_port)" --control "$T/ctl2" "$T/src.img" \
    2>"$T/policy.log" && fail "plain NBD on 0.0.0.0 was served"
grep -q "not a loopback address" "$T/policy.log" || fail "policy: $(cat "$T/policy.log")"
echo "tls-nbd: STARTTLS with nbdinfo/nbdcopy/qemu-img (PSK, X.509); plain and wrong-key clients refused"

# a whole migration with the guest on NBD over TLS at both ends: the
# source's export and the receiver's (the PULL gate) take STARTTLS
mkimage "$T/m.img" 16 60
P1=$(free_port); P2=$(free_port); PORT=$(free_port)
K="tls-psk-file=$T/keys.psk"
bg "$XL_INCMIG" serve --nbd "tcp:127.0.0.1:$P1" --control "$T/m.ctl" --tls-psk "$T/keys.psk" \
    "$T/m.img" 2>"$T/serve.log"
wait_for "[ -S '$T/m.ctl' ]" 10 || fail "serve did not start"
bg "$XL_INCMIG" guest --nbd "nbds://incmig@127.0.0.1:$P1/?$K,nbds://incmig@127.0.0.1:$P2/?$K" \
    --seconds 0 --rate 4M --journal "$T/journal" >"$T/guest.log" 2>&1
GUEST_PID=$LASTPID
bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$PORT" --image "$T/dst.img" \
    --nbd "tcp:127.0.0.1:$P2" --exit-when-done --tls-psk "$T/keys.psk" 2>"$T/receive.log"
RECV_PID=$LASTPID
wait_for "grep -q 'waiting for the source' '$T/receive.log'" 10 || fail "receiver did not start"
sleep 1
"$XL_INCMIG" migrate -s "" --no-progress --tls-psk "$T/keys.psk" "sim:$T/m.ctl" "127.0.0.1:$PORT" \
    >/dev/null 2>"$T/migrate.log" || fail "migration with the guest on NBD over TLS failed"
sleep 1
grep -q "reconnected to nbds://incmig@127.0.0.1:$P2" "$T/guest.log" || fail "the guest did not reach the gate over TLS"
stop_guest
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
"$XL_INCMIG" verify --journal "$T/journal" --image "$T/dst.img" --original "$T/m.img.orig" \
    >"$T/verify.log" 2>&1 || fail "verify: $(cat "$T/verify.log")"
echo "tls-nbd: a migration with the guest on NBD over TLS at both ends verified"
