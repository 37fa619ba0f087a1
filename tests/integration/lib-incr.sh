# lib-incr.sh: helpers of the incremental-migration tests (sourced after
# lib.sh).  Host A holds $T/a.img, host B $T/b.img; both "hosts" are
# directories of one machine, each side a real xl-incmig process.

# sparse_image PATH MIB DATA_MIB: PATH of MIB MiB whose first DATA_MIB MiB,
# spread over 8 extents, hold random data; the rest are holes.  PATH.orig
# is a sparse copy.
sparse_image() {
    local path=$1 mib=$2 data=$3 i step
    truncate -s "${mib}M" "$path"
    step=$((mib / 8))
    for i in 0 1 2 3 4 5 6 7; do
        head -c "$((data / 8))M" /dev/urandom |
            dd of="$path" bs=1M seek=$((i * step)) conv=notrunc status=none
    done
    cp --sparse=always "$path" "$path.orig"
}

# serve_on NAME IMAGE [serve options]: `serve` of IMAGE (domain "dom",
# disk xvda) with socket $T/NAME.sock and control $T/NAME.ctl; SERVE_PID
serve_on() {
    local name=$1 img=$2
    shift 2
    bg "$XL_INCMIG" serve --name dom --disk "xvda=$img,nbd=unix:$T/$name.sock" \
        --control "$T/$name.ctl" "$@" 2>"$T/serve-$name.log"
    SERVE_PID=$LASTPID
    wait_for "[ -S '$T/$name.ctl' ]" 20 || fail "serve $name did not start: $(cat "$T/serve-$name.log")"
}

# receive_on NAME IMAGE: a receiver putting disk xvda at IMAGE, serving it
# on $T/NAME.sock afterwards; RECV_PID, PORT
receive_on() {
    PORT=$(free_port)
    bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$PORT" \
        --disk "xvda=$2,nbd=unix:$T/$1.sock" --exit-when-done 2>"$T/receive-$1.log"
    RECV_PID=$LASTPID
    wait_for "grep -q 'waiting for the source' '$T/receive-$1.log'" 20 ||
        fail "receiver $1 did not start"
}

# migrate_from NAME REPORT: migrate the domain served as NAME to the
# receiver on $PORT; its JSON report in REPORT, its log in REPORT.log
migrate_from() {
    "$XL_INCMIG" migrate -s "" --no-progress --json "$2" "sim:$T/$1.ctl" \
        "127.0.0.1:$PORT" >"$2.out" 2>"$2.log"
}

# trip FROM_NAME TO_NAME TO_IMAGE REPORT: one migration, waiting until the
# serving process and the receiver are gone (no guest connected)
trip() {
    local spid=$SERVE_PID
    receive_on "$2" "$3"
    migrate_from "$1" "$4" || fail "migration $1 -> $2 failed: $(tail -5 "$4.log")"
    wait_for "! kill -0 $RECV_PID" 20 || fail "receiver $2 did not exit"
    wait_for "! kill -0 $spid" 20 || fail "serve $1 did not exit after release"
}

# writer NAME MIB JOURNAL: the guest rewrites most of 5% of the disk (all
# of its I/O in a 5% hot spot, 64 KiB blocks) through $T/NAME.sock: it
# writes MIB MiB (twice the hot spot covers about 86% of it), then stops.
writer() {
    local pid
    "$XL_INCMIG" guest --nbd "nbd+unix:///?socket=$T/$1.sock" --seconds 0 \
        --rate 400M --read-rate 1M --block-size 64K --queue-depth 32 \
        --hot 100:5 --journal "$3" --stats-json "$3.json" >"$3.log" 2>&1 &
    pid=$!
    PIDS="$PIDS $pid"
    wait_for "[ \"\$(json write_bytes '$3.json' 2>/dev/null || echo 0)\" -ge $(($2 << 20)) ]" 120 ||
        fail "the guest did not write $2 MiB in 120 s: $(tail -3 "$3.log")"
    kill -TERM "$pid"
    wait "$pid" || fail "guest failed: $(tail -3 "$3.log")"
    grep -q ' 0 mismatches' "$3.log" || fail "guest: $(tail -3 "$3.log")"
}

# journal_bytes JOURNAL BS: the bytes of the distinct blocks it wrote
journal_bytes() { echo $(( $(grep -c '^[0-9]' "$1") * $2 )); }

# base KEY REPORT: a string value of the first disk in the report
base() { grep -o "\"$1\":\"[^\"]*\"" "$2" | head -n 1 | sed 's/^[^:]*:"//; s/"$//'; }

# disk_wire REPORT: bytes on the wire but the domain's state stream
disk_wire() {
    local state
    state=$(grep -o '"state":[0-9]*' "$1" | head -n 1 | cut -d: -f2)
    echo $(( $(json wire_bytes "$1") - state ))
}

# control REPORT: handshake and control bytes
control() { grep -o '"control":[0-9]*' "$1" | head -n 1 | cut -d: -f2; }
