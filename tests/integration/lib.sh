# lib.sh: shared helpers for the integration tests (sourced).
# Each test gets a private directory, killed and removed on exit.
set -eu
XL_INCMIG=${XL_INCMIG:-$(cd "$(dirname "$0")/../.." && pwd)/tools/xl-incmig}
TESTS_BUILDDIR=${TESTS_BUILDDIR:-$(cd "$(dirname "$0")/.." && pwd)}
T=$(mktemp -d /tmp/incmig-test.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
    if [ "${KEEP:-}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
requires() { command -v "$1" >/dev/null 2>&1 || { echo "SKIP: $1 not found"; exit 77; }; }
fail() { echo "FAIL: $*" >&2; for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -30 "$f" >&2; }; done; exit 1; }
bg() { "$@" & PIDS="$PIDS $!"; LASTPID=$!; }
# wait_for COND_CMD [seconds]: poll until COND_CMD succeeds
wait_for() { local i=0 n=$(( ${2:-20} * 10 )); while ! eval "$1" >/dev/null 2>&1; do i=$((i+1)); [ $i -ge $n ] && return 1; sleep 0.1; done; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 )); }

# ---- migration scaffolding: serve -> guest -> receiver -> migrate -------

# mkimage PATH MIB [ALLOC_PERCENT]: random data in ALLOC_PERCENT of the
# 1 MiB extents (default 50), holes elsewhere; PATH.orig is a copy that
# verify uses for the blocks the guest never wrote.
mkimage() {
    local path=$1 mib=$2 pct=${3:-50} i
    head -c $((mib << 20)) /dev/urandom >"$path"
    for i in $(seq 0 $((mib - 1))); do
        [ $(( (i * 37) % 100 )) -lt "$pct" ] && continue
        fallocate -p -o $((i << 20)) -l $((1 << 20)) "$path" 2>/dev/null ||
            dd if=/dev/zero of="$path" bs=1M seek=$i count=1 conv=notrunc status=none
    done
    cp --sparse=always "$path" "$path.orig"
}

# start_serve IMAGE [serve options...]: the source export
start_serve() {
    local img=$1; shift
    SRC_SOCK=$T/src.sock; SRC_CTL=$T/src.ctl
    bg "$XL_INCMIG" serve --nbd "unix:$SRC_SOCK" --control "$SRC_CTL" "$@" "$img" 2>"$T/serve.log"
    SERVE_PID=$LASTPID
    wait_for "[ -S '$SRC_CTL' ]" 20 || fail "serve did not start"
}

# start_guest RATE [guest options...]: writes to the source, then the destination
start_guest() {
    local rate=$1; shift
    DST_SOCK=${DST_SOCK:-$T/dst.sock}
    bg "$XL_INCMIG" guest --nbd "nbd+unix:///?socket=$SRC_SOCK,nbd+unix:///?socket=$DST_SOCK" \
        --seconds 0 --rate "$rate" --journal "$T/journal" --stats-json "$T/guest.json" "$@" \
        >"$T/guest.log" 2>&1
    GUEST_PID=$LASTPID
}

# start_receiver [receiver options...]: listens on 127.0.0.1:$PORT
start_receiver() {
    DST_SOCK=${DST_SOCK:-$T/dst.sock}
    PORT=$(free_port)
    bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$PORT" --image "$T/dst.img" \
        --nbd "unix:$DST_SOCK" --exit-when-done "$@" 2>"$T/receive.log"
    RECV_PID=$LASTPID
    wait_for "grep -q 'waiting for the source' '$T/receive.log'" 20 || fail "receiver did not start"
}

# run_migrate [migrate options...]: to $MIG_HOST (default the receiver)
run_migrate() {
    "$XL_INCMIG" migrate -s "" --no-progress --json "$T/report.json" "$@" \
        "sim:$SRC_CTL" "${MIG_HOST:-127.0.0.1:$PORT}" >"$T/migrate.out" 2>"$T/migrate.log"
}

# stop_guest: SIGTERM, and its exit status must be 0 (no read mismatch)
stop_guest() {
    kill -TERM "$GUEST_PID"
    wait "$GUEST_PID" || fail "guest exited with status $? (read mismatches or errors)"
    grep -q ' 0 mismatches' "$T/guest.log" || fail "guest reported mismatches"
}

# verify_image IMAGE: every block as the journal and the original say
verify_image() {
    "$XL_INCMIG" verify --journal "$T/journal" --image "$1" --original "$T/src.img.orig" \
        >"$T/verify.log" 2>&1 || fail "verify of $1 failed: $(cat "$T/verify.log")"
    grep -q ' 0 mismatches' "$T/verify.log" || fail "verify: $(cat "$T/verify.log")"
}

# json KEY [FILE]: first numeric value of "KEY" in the report
json() { grep -o "\"$1\": *[0-9.e+-]*" "${2:-$T/report.json}" | head -n 1 | sed "s/.*: *//"; }
# fcmp A OP B: floating-point comparison with awk
fcmp() { awk -v a="$1" -v b="$3" "BEGIN { exit !(a $2 b) }"; }

# start_proxy: linkproxy from 127.0.0.1:$PPORT to the receiver; commands
# go to the FIFO $T/proxy.ctl (cut, down, up, cut-after BYTES)
start_proxy() {
    PPORT=$(free_port)
    mkfifo "$T/proxy.ctl"
    bg "$TESTS_BUILDDIR/integration/linkproxy" "$PPORT" "127.0.0.1:$PORT" \
        --control "$T/proxy.ctl" >"$T/proxy.out" 2>"$T/proxy.log"
    wait_for "grep -q ready '$T/proxy.out'" 10 || fail "linkproxy did not start"
    MIG_HOST=127.0.0.1:$PPORT
}
proxy() { echo "$*" >"$T/proxy.ctl"; }
# guest_writes: writes the guest has completed so far (from its stats file)
guest_writes() { json writes "$T/guest.json" 2>/dev/null || echo 0; }
# bg_migrate [options...]: run_migrate in the background; $MIG is its pid
# (the xl-incmig process itself, so that a test can kill it)
bg_migrate() {
    "$XL_INCMIG" migrate -s "" --no-progress --json "$T/report.json" "$@" \
        "sim:$SRC_CTL" "${MIG_HOST:-127.0.0.1:$PORT}" >"$T/migrate.out" 2>"$T/migrate.log" &
    MIG=$!
}

# start_sshd: a private sshd on a loopback port with throwaway keys (exit 77
# when that is impossible here); sets SSH (the client command), SSH_PORT
start_sshd() {
    requires ssh
    requires ssh-keygen
    SSHD=/usr/sbin/sshd
    [ -x "$SSHD" ] || { echo "SKIP: $SSHD not found"; exit 77; }
    [ "$(id -u)" = 0 ] || { echo "SKIP: sshd needs root here"; exit 77; }

    ssh-keygen -q -t ed25519 -N '' -f "$T/hostkey" </dev/null >/dev/null || fail "ssh-keygen (host)"
    ssh-keygen -q -t ed25519 -N '' -f "$T/id" </dev/null >/dev/null || fail "ssh-keygen (client)"
    cp "$T/id.pub" "$T/authorized_keys"
    chmod 600 "$T/authorized_keys"
    SSH_PORT=$(free_port)
    printf '%s\n' \
        "ListenAddress 127.0.0.1" \
        "Port $SSH_PORT" \
        "HostKey $T/hostkey" \
        "AuthorizedKeysFile $T/authorized_keys" \
        "PidFile $T/sshd.pid" \
        "UsePAM no" \
        "StrictModes no" \
        "PermitRootLogin prohibit-password" \
        "PasswordAuthentication no" \
        "KbdInteractiveAuthentication no" \
        "PubkeyAuthentication yes" \
        "AllowTcpForwarding no" \
        "X11Forwarding no" \
        "PrintMotd no" \
        "PrintLastLog no" \
        "UseDNS no" \
        "LogLevel VERBOSE" \
        >"$T/sshd_config"
    mkdir -p /run/sshd
    "$SSHD" -t -f "$T/sshd_config" 2>"$T/sshd-t.log" || {
        echo "SKIP: sshd rejects the test configuration: $(cat "$T/sshd-t.log")"; exit 77; }
    bg "$SSHD" -D -f "$T/sshd_config" -E "$T/sshd.log"
    SSHD_PID=$LASTPID
    SSH="ssh -i $T/id -p $SSH_PORT -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=5"
    if ! wait_for "$SSH 127.0.0.1 true" 10; then
        kill -0 "$SSHD_PID" 2>/dev/null || { echo "SKIP: sshd could not start: $(tail -5 "$T/sshd.log")"; exit 77; }
        echo "SKIP: cannot log in to the test sshd: $(tail -5 "$T/sshd.log")"; exit 77
    fi
    # The remote shell really runs commands (and the right binary).
    [ "$($SSH 127.0.0.1 "$XL_INCMIG" --version)" != "" ] || fail "remote xl-incmig --version printed nothing"
}

# ---- TLS keys (gnutls-bin) ----------------------------------------------

# mk_psk FILE [USER]: a pre-shared key file of one USER:HEXKEY line
mk_psk() {
    requires psktool
    psktool -u "${2:-incmig}" -p "$1" >/dev/null 2>&1 || fail "psktool"
}
# mk_x509 DIR [CADIR]: QEMU's layout (ca-cert.pem, server-*, client-*) in
# DIR, signed by a new CA (made in DIR), or by CADIR's CA; the server
# certificate names localhost and 127.0.0.1
mk_x509() {
    requires certtool
    local d=$1 ca=${2:-$1}
    mkdir -p "$d"
    if [ "$ca" = "$d" ]; then
        printf 'cn = incmig test CA\nca\ncert_signing_key\nexpiration_days = 2\n' >"$d/ca.info"
        certtool --generate-privkey --key-type=ecdsa --outfile "$d/ca-key.pem" 2>/dev/null || fail "certtool"
        certtool --generate-self-signed --load-privkey "$d/ca-key.pem" \
            --template "$d/ca.info" --outfile "$d/ca-cert.pem" >/dev/null 2>&1 || fail "certtool (CA)"
    else
        cp "$ca/ca-cert.pem" "$d/"
    fi
    printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$d/server.info"
    printf 'cn = incmig client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$d/client.info"
    local who
    for who in server client; do
        certtool --generate-privkey --key-type=ecdsa --outfile "$d/$who-key.pem" 2>/dev/null || fail "certtool"
        certtool --generate-certificate --load-privkey "$d/$who-key.pem" \
            --load-ca-certificate "$ca/ca-cert.pem" --load-ca-privkey "$ca/ca-key.pem" \
            --template "$d/$who.info" --outfile "$d/$who-cert.pem" >/dev/null 2>&1 ||
            fail "certtool ($who)"
    done
}
