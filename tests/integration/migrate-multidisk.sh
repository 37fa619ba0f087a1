#!/bin/bash
# migrate-multidisk.sh: a simulated domain with three disks of different
# sizes and block sizes (one sparse, one nearly idle) and 4 MiB of memory
# migrates while a guest writes to each disk.  Every destination image
# verifies block by block against its guest's journal; the report has each
# disk's own figures and the state stream's bytes.
. "$(dirname "$0")/lib.sh"
mkimage "$T/a.img" 96 60          # busy, 4 KiB tracking
mkimage "$T/b.img" 40 10          # sparse, 64 KiB tracking
mkimage "$T/c.img" 16 80          # nearly idle, 1 MiB tracking
SRC_CTL=$T/src.ctl
bg "$XL_INCMIG" serve --control "$SRC_CTL" --name dom3 --memory 4M \
    --disk "xvda=$T/a.img,nbd=unix:$T/a.src" \
    --disk "xvdb=$T/b.img,nbd=unix:$T/b.src,bs=64K" \
    --disk "xvdc=$T/c.img,nbd=unix:$T/c.src,bs=1M" 2>"$T/serve.log"
SERVE_PID=$LASTPID
wait_for "[ -S '$SRC_CTL' ]" 20 || fail "serve did not start"
GUESTS=""
for d in a:12M b:4M c:64K; do
    n=${d%%:*}
    bg "$XL_INCMIG" guest --nbd "nbd+unix:///?socket=$T/$n.src,nbd+unix:///?socket=$T/$n.dst" \
        --seconds 0 --rate "${d#*:}" --journal "$T/$n.journal" >"$T/guest-$n.log" 2>&1
    GUESTS="$GUESTS $n:$LASTPID"
done
PORT=$(free_port)
bg "$XL_INCMIG" migrate-receive --listen "127.0.0.1:$PORT" --exit-when-done \
    --root "$T/dst" \
    --disk "xvda=$T/dst/a.img,nbd=unix:$T/a.dst" \
    --disk "xvdb=$T/dst/b.img,nbd=unix:$T/b.dst" \
    --disk "xvdc=$T/dst/c.img,nbd=unix:$T/c.dst" 2>"$T/receive.log"
RECV_PID=$LASTPID
mkdir -p "$T/dst"
wait_for "grep -q 'waiting for the source' '$T/receive.log'" 20 || fail "receiver did not start"
sleep 2
# raw blocks (no compression): the per-disk byte counts below are exact
run_migrate --compress=off || fail "migration failed: $(tail -5 "$T/migrate.log")"
sleep 2
for g in $GUESTS; do
    n=${g%%:*} pid=${g#*:}
    kill -TERM "$pid"
    wait "$pid" || fail "guest of disk $n exited with status $? (read mismatches?)"
    grep -q ' 0 mismatches' "$T/guest-$n.log" || fail "guest $n: $(tail -1 "$T/guest-$n.log")"
done
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
for n in a b c; do
    "$XL_INCMIG" verify --journal "$T/$n.journal" --image "$T/dst/$n.img" \
        --original "$T/$n.img.orig" >"$T/verify-$n.log" 2>&1 ||
        fail "verify of disk $n: $(cat "$T/verify-$n.log")"
    grep -q ' 0 mismatches' "$T/verify-$n.log" || fail "verify $n: $(cat "$T/verify-$n.log")"
done
# per-disk figures, in disk order, each the disk's own
python3 - "$T/report.json" <<'PY' || fail "report: per-disk figures wrong"
import json, sys
r = json.load(open(sys.argv[1]))
d = r["disks"]
assert [x["name"] for x in d] == ["xvda", "xvdb", "xvdc"], d
assert [x["block_size"] for x in d] == [4096, 65536, 1048576], d
assert [x["size"] for x in d] == [96 << 20, 40 << 20, 16 << 20], d
for x in d:
    assert x["allocated_blocks"] > 0 and x["wire"]["push"] > 0, x
    # each disk's bytes are its own blocks: data blocks times its block size
    data = (x["pushed_blocks"] - x["zero_blocks"]) * x["block_size"]
    assert data <= x["wire"]["push"] <= data * 1.01 + 65536, x
    pulled = (x["demand_blocks"] + x["background_blocks"]) * x["block_size"]
    assert x["wire"]["pull_demand"] + x["wire"]["pull_background"] <= pulled * 1.01 + 65536, x
assert sum(x["wire"]["push"] for x in d) <= r["wire"]["push"] + r["wire"]["state"], r
assert r["state_bytes"] >= 4 << 20 and r["wire"]["state"] >= r["state_bytes"], r
assert r["downtime_ms"] > 0, r
PY
echo "multidisk: downtime $(json downtime_ms) ms, state $(json state_bytes) bytes, wire $(json wire_bytes) bytes"
