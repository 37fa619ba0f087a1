#!/bin/bash
# receive-refusals.sh: the receiver decides where disks go, and refuses a
# disk it cannot place safely.  A simulated domain with two disks (xvda,
# xvdb) and a guest writing to xvda; for each refusal a fresh receiver
# whose mapping is wrong for xvdb:
#   unmapped   no --disk for xvdb
#   outside    xvdb's path outside the --root
#   dotdot     xvdb's path escapes the root through ".."
#   dirlink    xvdb's directory is a symbolic link out of the root
#   exists     a file is already at xvdb's path (not created by this
#              migration): its content and mtime must not change
#   symlink    a symbolic link at xvdb's path (to a file that does not
#              exist: following it would create that file)
# Each time: the receiver says why, naming xvdb, and exits 1; the source's
# migrate exits 1 naming xvdb and saying the guest stays; nothing is
# created or touched at the destination (not even xvda's volume, which
# was mapped correctly: every disk is checked before anything is created),
# no staged NBD socket is left; the guest keeps writing on the source
# export, never reconnects, and the source disk verifies at the end.
. "$(dirname "$0")/lib.sh"
mkimage "$T/a.img" 32 50
mkimage "$T/b.img" 8 50
SRC_CTL=$T/src.ctl
bg "$XL_INCMIG" serve --control "$SRC_CTL" --name dom2 \
    --disk "xvda=$T/a.img,nbd=unix:$T/a.src" \
    --disk "xvdb=$T/b.img,nbd=unix:$T/b.src" 2>"$T/serve.log"
SERVE_PID=$LASTPID
wait_for "[ -S '$SRC_CTL' ]" 20 || fail "serve did not start"
bg "$XL_INCMIG" guest --nbd "nbd+unix:///?socket=$T/a.src,nbd+unix:///?socket=$T/a.dst" \
    --seconds 0 --rate 4M --journal "$T/journal" --stats-json "$T/guest.json" \
    >"$T/guest.log" 2>&1
GUEST_PID=$LASTPID

D=$T/dst                       # the root
mkdir -p "$D" "$T/outside"
ln -s "$T/outside" "$D/link"
echo precious >"$D/existing.img"
touch -d '2020-01-02 03:04:05' "$D/existing.img"
ln -s "$T/nowhere.img" "$D/dangling.img"
snapshot() { (cd "$T" && find dst outside -printf '%p %y %s %T@\n' | sort); }
snap0=$(snapshot)
FAILED=""
miss() { echo "FAIL: $*" >&2; FAILED="$FAILED
  $*"; }

# refusal CASE ERE XVDB_MAPPING...: the receiver maps xvda correctly and
# xvdb as given (no mapping when empty); its log must match ERE.
refusal() {
    local case=$1 pat=$2 port rc=0 st=0 h1; shift 2
    port=$(free_port)
    bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$port" --exit-when-done \
        --root "$D" --disk "xvda=$D/a.img,nbd=unix:$T/a.dst" "$@" 2>"$T/recv-$case.log"
    local pid=$LASTPID
    wait_for "grep -q 'waiting for the source' '$T/recv-$case.log'" 20 ||
        { miss "$case: receiver did not start: $(cat "$T/recv-$case.log")"; return 0; }
    timeout 60 "$XL_INCMIG" migrate -s "" --no-progress "sim:$SRC_CTL" "127.0.0.1:$port" \
        >"$T/migrate-$case.out" 2>"$T/migrate-$case.log" || rc=$?
    [ "$rc" = 1 ] || miss "$case: migrate exited with status $rc, expected 1"
    grep -Eq "xvdb.*$pat|$pat.*xvdb" "$T/migrate-$case.log" ||
        miss "$case: migrate does not say why xvdb was refused (want /$pat/): $(grep -i error "$T/migrate-$case.log" | head -3)"
    grep -q 'failed before the point of no return' "$T/migrate-$case.log" ||
        miss "$case: migrate does not say the guest stays on the source"
    wait_for "! kill -0 $pid" 10 || { miss "$case: receiver still running"; return 0; }
    wait "$pid" || st=$?
    [ "$st" = 1 ] || miss "$case: receiver exited with status $st, expected 1"
    grep -Eq "disk xvdb.*$pat" "$T/recv-$case.log" ||
        miss "$case: receiver does not name xvdb and why (want /$pat/): $(grep -i error "$T/recv-$case.log" | head -3)"
    [ "$(snapshot)" = "$snap0" ] ||
        miss "$case: the destination changed: $(diff <(echo "$snap0") <(snapshot) | tail -n +2 | head -5)"
    [ ! -e "$T/a.dst" ] && [ ! -e "$T/b.dst" ] || miss "$case: staged NBD socket left behind"
    [ ! -e "$T/nowhere.img" ] || miss "$case: a file was created through the symbolic link"
    kill -0 "$SERVE_PID" 2>/dev/null || fail "$case: the source export died"
    kill -0 "$GUEST_PID" 2>/dev/null || fail "$case: the guest died"
    h1=$(md5sum <"$T/journal")
    wait_for "[ \"\$(md5sum <'$T/journal')\" != '$h1' ]" 5 ||
        miss "$case: the guest stopped writing after the refused migration"
    echo "$case -> $(grep -Eo "disk xvdb.*" "$T/recv-$case.log" | head -n 1 | cut -c1-110)"
}

wait_for "[ -s '$T/journal' ]" 10 || fail "the guest did not start writing"
refusal unmapped 'is not mapped'
refusal outside  'outside the allowed roots' --disk "xvdb=$T/outside/b.img,nbd=unix:$T/b.dst"
refusal dotdot   'outside the allowed roots' --disk "xvdb=$D/../outside/b.img,nbd=unix:$T/b.dst"
refusal dirlink  'outside the allowed roots' --disk "xvdb=$D/link/b.img,nbd=unix:$T/b.dst"
refusal exists   'already exists'            --disk "xvdb=$D/existing.img,nbd=unix:$T/b.dst"
refusal symlink  'symbolic link'             --disk "xvdb=$D/dangling.img,nbd=unix:$T/b.dst"
[ "$(cat "$D/existing.img")" = precious ] || miss "the existing file's content changed"
[ "$(stat -c %Y "$D/existing.img")" = "$(date -d '2020-01-02 03:04:05' +%s)" ] ||
    miss "the existing file's mtime changed"

stop_guest
grep -q '"reconnects": 0' "$T/guest.json" || fail "the guest lost its source export: $(cat "$T/guest.json")"
"$XL_INCMIG" verify --journal "$T/journal" --image "$T/a.img" --original "$T/a.img.orig" \
    >"$T/verify.log" 2>&1 || fail "verify of the source disk failed: $(cat "$T/verify.log")"
grep -q ' 0 mismatches' "$T/verify.log" || fail "verify: $(cat "$T/verify.log")"
cmp -s "$T/b.img" "$T/b.img.orig" || fail "the idle source disk xvdb changed"
[ -z "$FAILED" ] || fail "refusals not as expected:$FAILED"
echo "receive-refusals: 6 refusals, nothing touched; source: $(tail -n 1 "$T/verify.log")"
