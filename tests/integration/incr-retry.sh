#!/bin/bash
# incr-retry.sh: an incremental migration that fails before GO (the
# destination refuses a corrupt state stream after round 0 was written
# into its older copy) leaves that copy's claim intact, the blocks written
# added to its bitmap: the retry is incremental again, and correct.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-incr.sh"
sparse_image "$T/a.img" 64 16
serve_on a "$T/a.img"
trip a b "$T/b.img" "$T/r1.json"

serve_on b "$T/b.img" --fault corrupt-state
writer b 7 "$T/journal"
receive_on a "$T/a.img"
migrate_from b "$T/r2.json" && fail "a corrupt state stream was accepted"
[ "$(base base "$T/r2.json")" = union ] || fail "first attempt: $(base base "$T/r2.json")"
wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
grep -q "keeps its generation" "$T/receive-a.log" || fail "A's copy lost its claim: $(tail -3 "$T/receive-a.log")"
kill -0 "$SERVE_PID" 2>/dev/null || fail "the domain did not keep running on B"
kill -TERM "$SERVE_PID"
wait_for "! kill -0 $SERVE_PID" 10 || fail "serve b did not stop"
grep -q "lineage saved" "$T/serve-b.log" || fail "serve b did not save its lineage"

serve_on b "$T/b.img"
trip b a "$T/a.img" "$T/r3.json"
[ "$(base base "$T/r3.json")" = union ] || fail "retry: $(base base "$T/r3.json"): $(base base_reason "$T/r3.json")"
cmp "$T/a.img" "$T/b.img" || fail "A's copy differs from B's after the retry"
"$XL_INCMIG" verify --journal "$T/journal" --image "$T/a.img" --original "$T/a.img.orig" \
    >"$T/verify.log" 2>&1 || fail "verify: $(cat "$T/verify.log")"
grep -q ' 0 mismatches' "$T/verify.log" || fail "verify: $(cat "$T/verify.log")"
echo "retry: failed attempt sent $(disk_wire "$T/r2.json") bytes, the retry $(disk_wire "$T/r3.json") ($(json base_blocks "$T/r3.json") blocks, union)"
