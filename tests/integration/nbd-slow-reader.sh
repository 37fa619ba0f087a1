#!/bin/bash
# nbd-slow-reader.sh: an NBD client that sends READs and never reads the
# replies (reconnecting whenever it is dropped) sits on the source export
# while the guest writes and a migration runs.  The export must keep
# serving the guest (workers never wait on that client's socket), drop
# the slow client, and SUSPEND's quiesce must cut it rather than wait for
# it: the disk downtime is compared with a migration without the slow
# reader in the same test (before issue 11 it grew by ~40 s).
. "$(dirname "$0")/lib.sh"
requires python3

# slow_reader SOCKET: pipelined 1 MiB READs, replies never read, sockets
# never closed (a new connection whenever the server gives up on one)
slow_reader() {
    bg python3 -c '
import socket, struct, sys, time
path = sys.argv[1]
conns = 0
held = []     # never closed: a client that neither reads nor hangs up
while True:
    try:
        s = socket.socket(socket.AF_UNIX); held.append(s); s.connect(path)
        hdr = b""
        while len(hdr) < 18:
            b = s.recv(18 - len(hdr))
            if not b: raise OSError("closed")
            hdr += b
        s.sendall(struct.pack(">I", 3))
        s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 0))
        info = b""
        while len(info) < 10:
            b = s.recv(10 - len(info))
            if not b: raise OSError("closed")
            info += b
        conns += 1
        print("connected", conns, flush=True)
        s.setblocking(False)
        cookie = 0
        while True:
            try:
                s.send(struct.pack(">IHHQQI", 0x25609513, 0, 0, cookie, 0, 1 << 20))
                cookie += 1
            except BlockingIOError:
                time.sleep(0.05)
            r = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if r: raise OSError(r)
            try:
                if s.recv(1, socket.MSG_PEEK) == b"": raise OSError("closed")
            except BlockingIOError:
                pass
    except OSError:
        time.sleep(0.1)
' "$1" >"$T/slow.out" 2>&1
    SLOW_PID=$LASTPID
}

# one_run NAME [slow]: a whole migration; prints its downtime_ms
one_run() {
    local name=$1
    mkimage "$T/src.img" 32 50
    DST_SOCK=$T/dst-$name.sock
    start_serve "$T/src.img"
    start_guest 4M
    [ "${2:-}" = slow ] && slow_reader "$SRC_SOCK"
    sleep 1
    start_receiver
    timeout 60 "$XL_INCMIG" migrate -s "" --no-progress --json "$T/report-$name.json" \
        "sim:$SRC_CTL" "127.0.0.1:$PORT" >"$T/migrate.out" 2>"$T/migrate-$name.log" ||
        fail "$name: migration failed (or hung): $(tail -3 "$T/migrate-$name.log")"
    sleep 1
    stop_guest
    wait_for "! kill -0 $RECV_PID" 10 || fail "$name: receiver did not exit"
    mv "$T/dst.img" "$T/dst-$name.img"
    verify_image "$T/dst-$name.img"
    wait_for "! kill -0 $SERVE_PID" 5 || fail "$name: the source export did not exit"
}

one_run plain
d0=$(json downtime_ms "$T/report-plain.json")
one_run slow slow
d1=$(json downtime_ms "$T/report-slow.json")
n=$(grep -c connected "$T/slow.out" || true)
[ "${n:-0}" -ge 1 ] || fail "the slow reader never got connected: $(cat "$T/slow.out")"
grep -q 'did not read its replies' "$T/serve.log" ||
    fail "the source export does not say it dropped the slow reader"
lim=$(awk -v a="$d0" 'BEGIN { print a + 200 }')
fcmp "$d1" '<=' "$lim" ||
    fail "disk downtime with a slow NBD reader: $d1 ms, without: $d0 ms"
echo "nbd-slow-reader: downtime $d0 ms without, $d1 ms with a slow reader ($n connections of it, dropped)"
