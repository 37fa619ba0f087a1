#!/bin/bash
# cli-errors.sh: every bad command line gets a clear message and exit
# status 2 (usage error) or 1 (runtime failure), and changes nothing: the
# simulated guest keeps running on its unchanged disk, no file appears.
# Each --help exits 0 with a usage text on stdout; the man page renders
# without groff warnings.  All checks run; the failures are listed at the end.
. "$(dirname "$0")/lib.sh"
FAILS=0
SRCDIR=$(cd "$(dirname "$0")/../.." && pwd)
bad() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

# x EXPECTED_STATUS WORD -- ARGS...: run xl-incmig ARGS; the status must be
# EXPECTED_STATUS (or one of "1|2"), stderr must contain WORD (a grep -E
# pattern, case-insensitive), stdout must hold no usage text.
x() {
    local want=$1 word=$2 rc; shift 3
    rc=0
    timeout "${TMO:-30}" "$XL_INCMIG" "$@" >"$T/out" 2>"$T/err" </dev/null || rc=$?
    if ! [[ "|$want|" == *"|$rc|"* ]]; then
        bad "xl-incmig $*: exit status $rc, want $want; stderr: $(head -3 "$T/err")"
    elif ! grep -qiE -- "$word" "$T/err"; then
        bad "xl-incmig $*: stderr lacks /$word/: $(head -3 "$T/err")"
    fi
}
# nomatch WORD: the last stderr must not contain WORD
nomatch() { ! grep -qiE -- "$1" "$T/err" || bad "$2: $(grep -iE -m1 -- "$1" "$T/err")"; }

cd "$T"
# ---- top level -------------------------------------------------------------------
x 2 'usage: xl-incmig'            -- 
x 2 "unknown command 'frobnicate'" -- frobnicate
x 2 'unknown option --frob'       -- --frob
grep -q 'commands:' "$T/err" || bad "unknown option: no command list"

# ---- migrate: usage errors (nothing is contacted) -------------------------------
x 2 'need DOMAIN and HOST'                 -- migrate
x 2 'need DOMAIN and HOST'                 -- migrate sim:"$T/nope.ctl"
x 2 'need DOMAIN and HOST'                 -- migrate a b c
x 2 "unknown --policy 'fast'"              -- migrate -s "" --policy fast sim:x h:1
x 2 "bad --bandwidth '10X'"                -- migrate -s "" --bandwidth 10X sim:x h:1
x 2 "bad --bandwidth"                      -- migrate -s "" --bandwidth 1 sim:x h:1
x 2 'max-rounds must be 1..1000'           -- migrate -s "" --max-rounds 0 sim:x h:1
x 2 'max-rounds'                           -- migrate -s "" --max-rounds 1001 sim:x h:1
x 2 'downtime'                             -- migrate -s "" --downtime 0 sim:x h:1
x 2 'unrecognized option|unknown option'   -- migrate --frob sim:x h:1
x 2 'needs --dest-image and --dest-nbd'    -- migrate sim:x somehost
x 2 'dest-image/--dest-nbd belong'         -- migrate -s "" --dest-image a sim:x h:1
x 2 "-p belongs to the receiver"           -- migrate -s "" -p dom h:1
x 2 'are for Xen domains'                  -- migrate -s "" -C "$T/vm.cfg" sim:x h:1
x 2 'are for Xen domains'                  -- migrate -s "" --shared-disk xvdb sim:x h:1
x 2 'shared-disk xvdb is given twice'      -- migrate -s "" --shared-disk xvdb --shared-disk xvdb dom h:1
# A host that looks like an ssh option is never an option: as the HOST
# argument getopt takes it for one (refused), and after -- the library
# refuses it as a host name (checked below with a running guest).
x 2 'invalid option|unrecognized'          -- migrate --dest-image a --dest-nbd unix:b sim:x -oProxyCommand=x

# ---- migrate: runtime failures -----------------------------------------------------
x 1 'Xen domains cannot be migrated from this machine.*sim:' -- migrate -s "" mydomain 127.0.0.1:1
x 1 "$T/nope.ctl.*xl-incmig serve"        -- migrate -s "" sim:"$T/nope.ctl" 127.0.0.1:1

# With a running simulated guest: bad hosts are refused, the guest keeps
# running on the source, its disk untouched.
head -c $((4 << 20)) /dev/urandom >"$T/disk.img"
cp "$T/disk.img" "$T/disk.img.orig"
start_serve "$T/disk.img"
PROXY_MARK=$T/proxycommand-ran
x 1 "'-oProxyCommand=touch.*' is not a valid host name" -- migrate \
    -s "ssh -o BatchMode=yes -o ConnectTimeout=2" --dest-image "$T/d.img" --dest-nbd "unix:$T/d.sock" \
    sim:"$SRC_CTL" -- "-oProxyCommand=touch $PROXY_MARK"
[ -e "$PROXY_MARK" ] && bad "the ProxyCommand host reached ssh"
x 1 "is not a valid host name" -- migrate -s "ssh -o BatchMode=yes -o ConnectTimeout=2" \
    --dest-image "$T/d.img" --dest-nbd "unix:$T/d.sock" sim:"$SRC_CTL" 'h;touch x'
x 1 "'127.0.0.1' is not HOST:PORT" -- migrate -s "" sim:"$SRC_CTL" 127.0.0.1
# ... and the hint that follows must not tell the user to run a receiver
# with "--listen 127.0.0.1", itself invalid.
nomatch 'listen 127.0.0.1`' "host without port: misleading 'is migrate-receive --listen 127.0.0.1 running' hint"
x 1 "HOST:PORT" -- migrate -s "" sim:"$SRC_CTL" 127.0.0.1:99999
x 1 "cannot connect to the receiver at 127.0.0.1:1" -- migrate -s "" sim:"$SRC_CTL" 127.0.0.1:1
grep -q 'kept running on the source' "$T/err" || bad "refused connection: no word about the guest staying on the source"
kill -0 "$SERVE_PID" 2>/dev/null || bad "serve exited after failed migrations"
cmp -s "$T/disk.img" "$T/disk.img.orig" || bad "failed migrations changed the source disk"
ls "$T"/d.img "$T"/d.sock >/dev/null 2>&1 && bad "a failed migration created destination files"
# The guest is not left paused: a write is served at once.
if command -v qemu-io >/dev/null 2>&1; then
    timeout 10 qemu-io -f raw "nbd+unix:///?socket=$SRC_SOCK" -c "write -P 5 0 4096" >"$T/qio" 2>&1 ||
        bad "the source export does not serve writes after failed migrations: $(cat "$T/qio")"
fi

# ---- migrate-receive --------------------------------------------------------------
x 2 'need --image PATH and --nbd URI' -- migrate-receive
x 2 'need --image PATH and --nbd URI' -- migrate-receive --image "$T/r.img"
x 2 'need --image PATH and --nbd URI' -- migrate-receive --nbd "unix:$T/r.sock"
x 2 'reconnect'                       -- migrate-receive --image "$T/r.img" --nbd "unix:$T/r.sock" --reconnect 0
# the receiver's own disk mapping (issue 9): bad --disk, --force gone, a
# mapping the library refuses before listening; nothing created
x 2 'unrecognized option|unknown option' -- migrate-receive --image "$T/r.img" --nbd "unix:$T/r.sock" --force
x 2 "bad --disk 'xvda'"               -- migrate-receive --disk xvda
x 2 "bad --disk '=x'"                 -- migrate-receive --disk =x
x 2 "bad --disk 'a=x,nbd='"           -- migrate-receive --disk a=x,nbd=
x 2 'one-disk domain'                 -- migrate-receive --disk "a=$T/r.img" --image "$T/r.img" --nbd "unix:$T/r.sock"
x 1 'disk a is given twice'           -- migrate-receive --disk "a=$T/r.img,nbd=unix:$T/r.sock" --disk "a=$T/r2.img,nbd=unix:$T/r2.sock"
x 1 'name the same path'              -- migrate-receive --disk "a=$T/r.img,nbd=unix:$T/r.sock" --disk "b=$T/r.img,nbd=unix:$T/r2.sock"
x 1 "nbd=http://x is not unix:PATH"   -- migrate-receive --disk "a=$T/r.img,nbd=http://x"
x 1 "root $T/nodir is not a directory" -- migrate-receive --root "$T/nodir" --disk "a=$T/r.img,nbd=unix:$T/r.sock"
x 1 "unknown target 'qemu'"           -- migrate-receive --target qemu --image "$T/r.img" --nbd "unix:$T/r.sock"
x 1 'lvm:vg0 is not lvm:VG/LV'        -- migrate-receive --target xen --disk a=lvm:vg0
x 1 'lvm:vg0/-x is not lvm:VG/LV'     -- migrate-receive --target xen --disk a=lvm:vg0/-x
x 1 'a=shared: a disk on shared'      -- migrate-receive --disk "a=shared,nbd=unix:$T/r.sock"
x 1 'is for the xen target'           -- migrate-receive -p --disk "a=$T/r.img,nbd=unix:$T/r.sock"
[ -e "$T/r.img" ] || [ -e "$T/r.sock" ] || [ -e "$T/r2.img" ] || [ -e "$T/nodir" ] && bad "migrate-receive usage errors created files"

# ---- --resume (crash-safe PULL) ----------------------------------------------------
x 2 'no DOMAIN, HOST'                     -- migrate --resume x sim:a h:1
x 2 'no DOMAIN, HOST'                     -- migrate --resume x -s ""
x 1 'neither a state file.*32 hexadecimal' -- migrate --resume 0123
x 1 "cannot open the state file $T/none"  -- migrate --resume "$T/none.state"
printf 'not a state file' >"$T/junk.state"
x 1 'is not an incmig state file'         -- migrate --resume "$T/junk.state"
x 2 'no --disk, --image'                  -- migrate-receive --resume x --image "$T/r.img"
x 1 'is not an incmig state file'         -- migrate-receive --resume "$T/junk.state"
x 1 'neither a state file'                -- migrate-receive --resume zz --state-dir "$T"
rm -f "$T/junk.state"

# ---- serve ------------------------------------------------------------------------
x 2 'need IMAGE and --nbd URI'  -- serve "$T/disk.img"
x 2 'need IMAGE and --nbd URI'  -- serve --nbd "unix:$T/s2.sock"
x 1 "$T/missing.img"            -- serve --nbd "unix:$T/s2.sock" "$T/missing.img"
[ -e "$T/missing.img" ] && bad "serve created the missing image"
cp "$T/disk.img.orig" "$T/disk2.img"
# Block sizes outside "power of two, 4K..1M" are refused (by the CLI: 2;
# or by the library with its own message: 1), naming the constraint.
x '1|2' 'power of two|block-size' -- serve --nbd "unix:$T/s2.sock" --block-size 3000 "$T/disk2.img"
grep -qi 'power of two' "$T/err" || bad "--block-size 3000: the message does not say 'power of two 4K..1M'"
x '1|2' 'power of two|block-size' -- serve --nbd "unix:$T/s2.sock" --block-size 2K "$T/disk2.img"
x '1|2' 'block-size|block size'   -- serve --nbd "unix:$T/s2.sock" --block-size 2M "$T/disk2.img"
# 0 is not "the default": it must be refused, not serve with 4K blocks.
TMO=3 x '1|2' 'block-size|block size'   -- serve --nbd "unix:$T/s2.sock" --block-size 0 "$T/disk2.img"
rm -f "$T/s2.sock" "$T/disk2.img.ctl"
x 2 'bad --block-size'            -- serve --nbd "unix:$T/s2.sock" --block-size 4Q "$T/disk2.img"
x 2 'requests must be 1..256'     -- serve --nbd "unix:$T/s2.sock" --requests 0 "$T/disk2.img"
ls "$T"/s2.sock "$T"/disk2.img.ctl >/dev/null 2>&1 && bad "refused serve commands left sockets behind"
cmp -s "$T/disk2.img" "$T/disk.img.orig" || bad "refused serve commands changed the image"
# A control or NBD socket path that names a regular file is refused, and
# the file is left alone (not unlinked to make room for a socket).
echo precious >"$T/notasocket"
x 1 'not a socket' -- serve --nbd "unix:$T/s2.sock" --control "$T/notasocket" "$T/disk2.img"
x 1 'not a socket' -- serve --nbd "unix:$T/notasocket" "$T/disk2.img"
[ "$(cat "$T/notasocket" 2>/dev/null)" = precious ] || bad "serve removed or changed a regular file at a socket path"
rm -f "$T/s2.sock"

# ---- guest ------------------------------------------------------------------------
# Not an NBD URI: refused at once (it used to retry for 60 s, then say
# "cannot connect"), as is the second of two.
TMO=5 x 2 "'unix:$T/s.sock' is not an NBD URI" -- guest --nbd "unix:$T/s.sock" --seconds 1
TMO=5 x 2 "'$T/s.sock' is not an NBD URI" -- guest --nbd "nbd+unix:///?socket=$T/s.sock,$T/s.sock" --seconds 1

# ---- verify -----------------------------------------------------------------------
x 1 "cannot open the journal $T/nojournal" -- verify --journal "$T/nojournal" --image "$T/disk.img"

# ---- --help -----------------------------------------------------------------------
for c in "" migrate migrate-receive serve guest verify demo; do
    rc=0
    "$XL_INCMIG" $c --help >"$T/out" 2>"$T/err" || rc=$?
    [ $rc = 0 ] || bad "xl-incmig $c --help: exit status $rc"
    grep -q "^usage: xl-incmig $c" "$T/out" || bad "xl-incmig $c --help: no usage line on stdout"
    [ -s "$T/err" ] && bad "xl-incmig $c --help wrote to stderr: $(head -2 "$T/err")"
done
"$XL_INCMIG" -h >"$T/out" 2>&1 && grep -q '^commands:' "$T/out" || bad "xl-incmig -h"

# ---- the man page ------------------------------------------------------------------
MAN=$SRCDIR/tools/xl-incmig.1
if command -v groff >/dev/null 2>&1 && [ -f "$MAN" ]; then
    groff -man -Tutf8 -ww -z "$MAN" >"$T/groff" 2>&1 || bad "groff failed on $MAN"
    [ -s "$T/groff" ] && bad "groff warnings for $MAN: $(head -5 "$T/groff")"
    groff -man -Tutf8 -P-cbou "$MAN" 2>/dev/null | grep -q 'BY HAND' || bad "man page lacks BY HAND"
else
    echo "groff not installed: man page check skipped"
fi

[ $FAILS = 0 ] || { echo "FAIL: $FAILS check(s) failed" >&2; exit 1; }
echo "cli-errors: all checks passed"
