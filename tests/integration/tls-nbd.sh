#!/bin/bash
# tls-nbd.sh: NBD over TCP with keys follows NBD's STARTTLS, so libnbd's
# clients work: nbdinfo/nbdcopy with the PSK file or the certificates read
# the export; a client without TLS is told TLS is required; one with
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
kill "$SP"; wait "$SP" 2>/dev/null || true

serve_tcp --tls-x509 "$T/pki"
rm -f "$T/copy.img"
nbdcopy "nbds://127.0.0.1:$NPORT/?tls-certificates=$T/pki" "$T/copy.img" ||
    fail "nbdcopy over TLS (X.509)"
cmp "$T/src.img" "$T/copy.img" || fail "the copy over TLS (X.509) differs"
kill "$SP"; wait "$SP" 2>/dev/null || true

# plain NBD over TCP off loopback needs --tls=off
"$XL_INCMIG" serve --nbd "tcp:0.0.0.0:$(free_port)" --control "$T/ctl2" "$T/src.img" \
    2>"$T/policy.log" && fail "plain NBD on 0.0.0.0 was served"
grep -q "not a loopback address" "$T/policy.log" || fail "policy: $(cat "$T/policy.log")"
echo "tls-nbd: STARTTLS with nbdinfo/nbdcopy (PSK, X.509); plain and wrong-key clients refused"
