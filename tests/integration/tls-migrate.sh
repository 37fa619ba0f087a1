#!/bin/bash
# tls-migrate.sh: the migration stream over TLS.  A guest that writes
# throughout migrates over PSK and over X.509 (certtool's certificates) and
# verifies; a TLS receiver refuses a plain source, one with another key
# and one whose certificate another CA signed, each with a clear error,
# and still takes the real source after them; plain TCP off loopback is
# refused unless --tls=off.
. "$(dirname "$0")/lib.sh"
mk_psk "$T/keys.psk"
mk_psk "$T/other.psk"
mk_x509 "$T/pki"
mk_x509 "$T/evil"

# migrate_with OPTS...: one migration of a writing guest, verified
migrate_with() {
    rm -f "$T/dst.img" "$T/journal"
    mkimage "$T/src.img" 16 60
    start_serve "$T/src.img"
    start_guest 5M
    start_receiver "$@"
    sleep 1
    run_migrate "$@" || fail "migration over TLS ($*) failed"
    sleep 1
    stop_guest
    wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
    verify_image "$T/dst.img"
    wait_for "! kill -0 $SERVE_PID" 10 || kill "$SERVE_PID"
}
migrate_with --tls-psk "$T/keys.psk"
migrate_with --tls-x509 "$T/pki"

# refusals: one receiver, three bad sources, then the real one
rm -f "$T/dst.img"
mkimage "$T/src.img" 4 60
start_serve "$T/src.img"
start_receiver --tls-psk "$T/keys.psk"
run_migrate && fail "a plain source was accepted by a TLS receiver"
grep -q "it does not speak TLS" "$T/receive.log" || fail "no clear refusal of the plain source"
grep -q "if it requires TLS, give this side its --tls-psk" "$T/migrate.log" ||
    fail "the plain source was not told why: $(cat "$T/migrate.log")"
run_migrate --tls-psk "$T/other.psk" && fail "a source with another key was accepted"
grep -q "handshake failed.*another pre-shared key" "$T/receive.log" ||
    fail "no clear refusal of the wrong key"
grep -q "TLS (PSK) handshake failed" "$T/migrate.log" || fail "wrong key: source not told"
[ ! -e "$T/dst.img" ] || fail "a refused source created the destination image"
run_migrate --tls-psk "$T/keys.psk" || fail "the real source was not taken after the refusals"
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
cmp "$T/src.img" "$T/dst.img" || fail "images differ"
wait_for "! kill -0 $SERVE_PID" 10 || kill "$SERVE_PID"

rm -f "$T/dst.img"
start_serve "$T/src.img"
start_receiver --tls-x509 "$T/pki"
run_migrate --tls-x509 "$T/evil" && fail "a certificate of another CA was accepted"
grep -q "refused a connection: TLS (X.509)" "$T/receive.log" ||
    fail "no clear refusal of the foreign certificate"
run_migrate --tls-x509 "$T/pki" || fail "X.509 after a refusal failed"
wait_for "! kill -0 $SERVE_PID" 10 || kill "$SERVE_PID"

# off loopback: keys, or --tls=off
"$XL_INCMIG" migrate-receive --listen "0.0.0.0:$(free_port)" --image "$T/x.img" \
    --nbd "unix:$T/x.sock" 2>"$T/policy.log" && fail "plain TCP on 0.0.0.0 was accepted"
grep -q "not a loopback address.*--tls=off" "$T/policy.log" || fail "policy: $(cat "$T/policy.log")"
"$XL_INCMIG" migrate -s "" --tls=off --tls-psk "$T/keys.psk" sim:/nonexistent 127.0.0.1:1 \
    2>"$T/both.log" && fail "--tls=off with keys was accepted"
grep -q "one of --tls=off" "$T/both.log" || fail "conflicting options: $(cat "$T/both.log")"
# bad TLS options: each a clear usage error, nothing started
cp "$T/keys.psk" "$T/open.psk"
chmod 644 "$T/open.psk"
"$XL_INCMIG" migrate -s "" --tls-psk "$T/open.psk" sim:/nonexistent 127.0.0.1:1 2>"$T/open.log" || true
grep -q "open.psk is readable by other users" "$T/open.log" || fail "no warning for a readable key: $(cat "$T/open.log")"
"$XL_INCMIG" migrate -s "" --tls=on sim:/nonexistent 127.0.0.1:1 2>"$T/on.log" && fail "--tls=on accepted"
grep -q "\-\-tls takes 'off'" "$T/on.log" || fail "--tls=on: $(cat "$T/on.log")"
"$XL_INCMIG" migrate -s "" --tls-psk "$T/none.psk" sim:/nonexistent 127.0.0.1:1 2>"$T/nokey.log" &&
    fail "a missing key file was accepted"
grep -q "cannot read the pre-shared key" "$T/nokey.log" || fail "missing key file: $(cat "$T/nokey.log")"
"$XL_INCMIG" migrate -s "" --tls-psk "$T/keys.psk" --tls-username nobody sim:/nonexistent 127.0.0.1:1 \
    2>"$T/nouser.log" && fail "an unknown --tls-username was accepted"
grep -q "no 'nobody' line" "$T/nouser.log" || fail "unknown user: $(cat "$T/nouser.log")"
"$XL_INCMIG" migrate-receive --listen "127.0.0.1:$(free_port)" --tls-x509 "$T" --image "$T/x.img" \
    --nbd "unix:$T/x.sock" 2>"$T/nocert.log" && fail "a directory without certificates was accepted"
grep -q "holds neither server-cert.pem" "$T/nocert.log" || fail "no certs: $(cat "$T/nocert.log")"
P=$(free_port)
bg "$XL_INCMIG" migrate-receive --tls=off --listen "0.0.0.0:$P" --image "$T/x.img" \
    --nbd "unix:$T/x.sock" 2>"$T/off.log"
wait_for "grep -q 'waiting for the source' '$T/off.log'" 10 || fail "--tls=off: $(cat "$T/off.log")"
echo "tls-migrate: PSK and X.509 migrations verified; plain, wrong-key, foreign-CA peers refused"
