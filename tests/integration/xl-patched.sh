#!/bin/bash
# xl-patched.sh: the patched xl's --incremental-storage paths, run by
# `make xl-patched` after tools/xl-patch/build-xl.sh (not part of `make
# check`: it needs Debian's xen source).  XL_NOHV is the patched xl's own
# code with a main that needs no Xen (tools/xl-patch/xl-nohv.c): its
# main_migrate and main_migrate_receive, as patched, hand over to
# libincmig.  On the simulated guest, which keeps writing:
#   - plain TCP: `xl migrate-receive --incremental-storage --listen` and
#     `xl migrate --incremental-storage -s ""`;
#   - xl's -s transport: a private sshd, the receiver started by the
#     library as `xl migrate-receive --incremental-storage ...` with the
#     stream on the session's stdin/stdout;
#   - a failure before GO: status 1, the guest runs on, its disk unchanged.
# Each time the report comes out on stdout and the destination disk
# matches the guest's journal.
. "$(dirname "$0")/lib.sh"
[ -x "${XL_NOHV:-}" ] || fail "XL_NOHV (the patched xl's xl-nohv) not set or not executable: run make xl-patched"
XL="$XL_NOHV"

# ---- a failure before GO changes nothing -----------------------------------------
mkimage "$T/src.img" 32 60
start_serve "$T/src.img"
cp "$T/src.img" "$T/src.img.before"
rc=0
"$XL" migrate --incremental-storage -s "" --no-progress "sim:$SRC_CTL" 127.0.0.1:1 \
    >"$T/refused.out" 2>"$T/refused.log" || rc=$?
[ $rc = 1 ] || fail "migration to a closed port: status $rc, want 1"
grep -q '^xl migrate --incremental-storage: .*kept running on the source' "$T/refused.log" ||
    fail "no 'kept running on the source' from xl migrate: $(cat "$T/refused.log")"
kill -0 "$SERVE_PID" 2>/dev/null || fail "the source domain died after a refused migration"
cmp -s "$T/src.img" "$T/src.img.before" || fail "a refused migration changed the source disk"
rc=0
"$XL" migrate --incremental-storage --max-rounds 0 "sim:$SRC_CTL" h >/dev/null 2>"$T/usage.log" || rc=$?
[ $rc = 2 ] && grep -q 'max-rounds must be 1..1000' "$T/usage.log" ||
    fail "usage error through xl: status $rc, $(cat "$T/usage.log")"

# ---- plain TCP, both ends xl ------------------------------------------------------
DST_SOCK=$T/dst.sock
start_guest 5M
sleep 1
PORT=$(free_port)
bg "$XL" migrate-receive --incremental-storage --listen "127.0.0.1:$PORT" \
    --image "$T/dst.img" --nbd "unix:$DST_SOCK" --exit-when-done 2>"$T/receive.log"
RECV_PID=$LASTPID
wait_for "grep -q 'waiting for the source' '$T/receive.log'" 20 || fail "xl migrate-receive did not start"
"$XL" migrate --incremental-storage -s "" --no-progress --json "$T/report.json" \
    "sim:$SRC_CTL" "127.0.0.1:$PORT" >"$T/migrate.out" 2>"$T/migrate.log" ||
    fail "xl migrate --incremental-storage over TCP failed"
grep -q '^migration report' "$T/migrate.out" || fail "no report on xl migrate's stdout"
grep -q '^xl migrate-receive --incremental-storage: ' "$T/receive.log" ||
    fail "the receiver's messages are not xl migrate-receive's"
sleep 1
stop_guest
wait_for "! kill -0 $RECV_PID" 15 || fail "xl migrate-receive --exit-when-done did not exit"
verify_image "$T/dst.img"
tcp_line="xl, tcp: downtime $(json downtime_ms) ms, wire $(json wire_bytes) bytes"

# ---- xl's -s transport: the receiver started over ssh as xl migrate-receive -------
if [ "$(id -u)" != 0 ] || [ ! -x /usr/sbin/sshd ]; then
    echo "$tcp_line"
    echo "SKIP (ssh part only): no sshd as root here"
    exit 0
fi
start_sshd
kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true
rm -f "$SRC_CTL" "$SRC_SOCK" "$T/journal" "$DST_SOCK"
mkimage "$T/src.img" 32 60
start_serve "$T/src.img"
DST_SOCK=$T/dst2.sock
start_guest 5M
sleep 1
"$XL" migrate --incremental-storage -s "$SSH" --receiver "$XL migrate-receive --incremental-storage" \
    --dest-image "$T/dst2.img" --dest-nbd "unix:$DST_SOCK" --no-progress \
    --json "$T/report.json" "sim:$SRC_CTL" 127.0.0.1 >"$T/migrate2.out" 2>"$T/migrate2.log" ||
    fail "xl migrate --incremental-storage over ssh failed"
grep -q '^migration report' "$T/migrate2.out" || fail "no report on stdout (ssh)"
grep -q 'xl migrate-receive --incremental-storage: ' "$T/migrate2.log" ||
    fail "the receiver on the far side was not xl migrate-receive (its stderr comes back over ssh)"
sleep 1
stop_guest
verify_image "$T/dst2.img"
echo "$tcp_line"
echo "xl, ssh: downtime $(json downtime_ms) ms, wire $(json wire_bytes) bytes"
