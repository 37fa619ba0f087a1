#!/bin/bash
# sockets.sh: unix sockets are 0600 whatever the umask (0660 and the
# group with --socket-group), a peer of another uid is refused even when
# the mode lets it in, images and sockets are not reached through
# symbolic links, and the rendezvous lives in the private runtime
# directory.
. "$(dirname "$0")/lib.sh"
requires setpriv
requires nbdinfo
[ -x /usr/bin/python3 ] || { echo "SKIP: /usr/bin/python3 (a client uid nobody can run) not found"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to run a client as another uid"; exit 77; }
id nobody >/dev/null 2>&1 || { echo "SKIP: no user nobody here"; exit 77; }
NOGROUP=$(id -gn nobody)
head -c 1M /dev/urandom >"$T/src.img"
chmod 755 "$T"                       # others may reach the sockets' names

umask 000
bg "$XL_INCMIG" serve --nbd "unix:$T/src.sock" --control "$T/src.ctl" "$T/src.img" 2>"$T/serve.log"
SP=$LASTPID
wait_for "[ -S '$T/src.ctl' ]" 10 || fail "serve did not start"
for s in src.sock src.ctl; do
    [ "$(stat -c %a "$T/$s")" = 600 ] || fail "$s is $(stat -c %a "$T/$s") under umask 000"
done
nbdinfo --size "nbd+unix:///?socket=$T/src.sock" >/dev/null || fail "the owner was refused"

# a foreign uid, even with the mode opened: refused by the peer check
chmod 666 "$T/src.sock" "$T/src.ctl"
as_nobody() { setpriv --reuid=nobody --regid="$NOGROUP" --clear-groups "$@"; }
as_nobody nbdinfo --size "nbd+unix:///?socket=$T/src.sock" 2>/dev/null &&
    fail "uid nobody read the export"
as_nobody /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
try:
    s.sendall(b"INFO\n"); sys.exit(1 if s.recv(100).startswith(b"OK") else 0)
except OSError:
    sys.exit(0)' "$T/src.ctl" ||
    fail "uid nobody was answered on the control socket"
wait_for "grep -q 'refused a connection from uid $(id -u nobody)' '$T/serve.log'" 5 ||
    fail "no refusal logged: $(cat "$T/serve.log")"
kill "$SP"; wait "$SP" 2>/dev/null || true

# --socket-group: 0660, that group, and its members are let in
bg "$XL_INCMIG" serve --socket-group "$NOGROUP" --nbd "unix:$T/src.sock" --control "$T/src.ctl" \
    "$T/src.img" 2>"$T/serve2.log"
SP=$LASTPID
wait_for "[ -S '$T/src.ctl' ]" 10 || fail "serve --socket-group did not start"
[ "$(stat -c '%a %G' "$T/src.sock")" = "660 $NOGROUP" ] ||
    fail "--socket-group: $(stat -c '%a %G' "$T/src.sock")"
as_nobody nbdinfo --size "nbd+unix:///?socket=$T/src.sock" >/dev/null ||
    fail "a member of --socket-group was refused"
kill "$SP"; wait "$SP" 2>/dev/null || true
umask 022

# symbolic links: an image, and a control socket
ln -s "$T/src.img" "$T/link.img"
"$XL_INCMIG" serve --nbd "unix:$T/l.sock" --control "$T/l.ctl" "$T/link.img" 2>"$T/link.log" &&
    fail "a symlinked image was served"
grep -q "is a symbolic link: refused" "$T/link.log" || fail "symlinked image: $(cat "$T/link.log")"
bg "$XL_INCMIG" serve --nbd "unix:$T/src.sock" --control "$T/src.ctl" "$T/src.img" 2>"$T/serve3.log"
wait_for "[ -S '$T/src.ctl' ]" 10 || fail "serve did not start"
ln -s "$T/src.ctl" "$T/link.ctl"
"$XL_INCMIG" migrate -s "" "sim:$T/link.ctl" 127.0.0.1:1 2>"$T/mlink.log" &&
    fail "migrate followed a symlinked control socket"
grep -q "symbolic link" "$T/mlink.log" || fail "symlinked socket: $(cat "$T/mlink.log")"

# the rendezvous: a name in the runtime directory, 0600 in a 0700 dir
RV=rendezvous-test-$$.sock
export XDG_RUNTIME_DIR=$T/xdg
mkdir -m 700 "$XDG_RUNTIME_DIR"
DIR=/run/incmig
[ "$(id -u)" = 0 ] || DIR=$XDG_RUNTIME_DIR/incmig
bg sh -c "sleep 8 | '$XL_INCMIG' migrate-receive --image '$T/rv.img' --nbd 'unix:$T/rv.sock' --rendezvous $RV >/dev/null 2>'$T/rv.log'"
wait_for "[ -S '$DIR/$RV' ]" 10 || fail "no rendezvous in $DIR: $(cat "$T/rv.log")"
[ "$(stat -c %a "$DIR")" = 700 ] || fail "$DIR is $(stat -c %a "$DIR")"
[ "$(stat -c %a "$DIR/$RV")" = 600 ] || fail "rendezvous is $(stat -c %a "$DIR/$RV")"

# as another user: $XDG_RUNTIME_DIR/incmig; a runtime directory that is a
# symbolic link (or not ours) is refused
mkdir -m 700 "$T/xdgn" "$T/xdgs"
chown nobody "$T/xdgn" "$T/xdgs"
ln -s /tmp "$T/xdgs/incmig"
RVN=rendezvous-nobody-$$.sock
bg sh -c "sleep 8 | setpriv --reuid=nobody --regid=$NOGROUP --clear-groups env XDG_RUNTIME_DIR='$T/xdgn' \
    '$XL_INCMIG' migrate-receive --image '$T/xdgn/rv.img' --nbd 'unix:$T/xdgn/rv.sock' \
    --rendezvous $RVN >/dev/null 2>'$T/rvn.log'"
wait_for "[ -S '$T/xdgn/incmig/$RVN' ]" 10 || fail "no rendezvous in \$XDG_RUNTIME_DIR/incmig: $(cat "$T/rvn.log")"
[ "$(stat -c '%a %U' "$T/xdgn/incmig")" = "700 nobody" ] || fail "runtime dir: $(stat -c '%a %U' "$T/xdgn/incmig")"
setpriv --reuid=nobody --regid="$NOGROUP" --clear-groups env XDG_RUNTIME_DIR="$T/xdgs" \
    "$XL_INCMIG" migrate-receive --image "$T/xdgs/rv.img" --nbd "unix:$T/xdgs/rv.sock" \
    --rendezvous x.sock </dev/null >/dev/null 2>"$T/rvs.log" && fail "a symlinked runtime directory was used"
grep -q "is not a directory of ours" "$T/rvs.log" || fail "symlinked runtime dir: $(cat "$T/rvs.log")"
echo "sockets: 0600 under umask 000, foreign uid refused, --socket-group, no symlinks, rendezvous in $DIR"
