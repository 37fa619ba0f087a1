#!/bin/bash
# log-ratelimit.sh: a flood of bad NBD handshakes (500 clients with flags
# this server does not speak) costs one log line, and the next one after
# the interval (5 s) says how many were suppressed.
. "$(dirname "$0")/lib.sh"
requires python3
head -c 1M /dev/urandom >"$T/src.img"
start_serve "$T/src.img"
flood() {
    python3 - "$SRC_SOCK" "$1" <<'PY'
import socket, sys
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.recv(18)
    s.sendall(b"\0\0\0\0")        # no FIXED_NEWSTYLE: refused
    s.recv(1)                     # until the server closes
    s.close()
PY
}
flood 500
n=$(grep -c 'client flags 0x0 not supported' "$T/serve.log" || true)
[ "$n" = 1 ] || fail "$n lines for 500 bad handshakes (expected 1)"
sleep 5.2
flood 1
wait_for "grep -q 'more like the last message suppressed' '$T/serve.log'" 5 ||
    fail "no suppressed count after the interval"
k=$(grep -o '([0-9]* more like the last message suppressed' "$T/serve.log" | tr -dc 0-9)
[ "$k" = 499 ] || fail "$k suppressed, expected 499"
echo "log-ratelimit: 500 bad handshakes, $(grep -c 'not supported' "$T/serve.log") lines, then '$k more suppressed'"
