#!/bin/bash
# incr-there-and-back.sh: issue 12's main case.  A 1 GiB disk migrates
# A -> B; there the guest rewrites about 5% of it; it migrates B -> A.  The
# return trip finds A's copy proven (same generation, nothing written
# since) and B's bitmap of the rewrites: round 0 sends their union only.
# Bytes on the wire <= 1.05 x the changed bytes + control, and A's copy
# then matches the guest's journal block by block.  A full copy of the
# same disk, in the same run, is printed beside it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-incr.sh"
sparse_image "$T/a.img" 1024 64

serve_on a "$T/a.img"
trip a b "$T/b.img" "$T/r1.json"
[ "$(base base "$T/r1.json")" = full ] || fail "first trip not a full copy: $(base base_reason "$T/r1.json")"
cmp "$T/a.img" "$T/b.img" || fail "B's copy differs after the first trip"
[ -f "$T/a.img.incmig" ] && [ -f "$T/b.img.incmig" ] || fail "no lineage beside the copies"

# On B the guest rewrites ~5% (serve tracks it), then the domain goes back.
serve_on b "$T/b.img"
writer b 100 "$T/journal"
changed=$(journal_bytes "$T/journal" 65536)
[ "$changed" -gt $((30 << 20)) ] || fail "the guest rewrote only $changed bytes"
trip b a "$T/a.img" "$T/r2.json"
[ "$(base base "$T/r2.json")" = union ] || fail "return trip: $(base base "$T/r2.json"): $(base base_reason "$T/r2.json")"
grep -q 'round 0 is union' "$T/receive-a.log" || fail "the receiver did not print the decision"
grep -q 'sends the union of both bitmaps' "$T/r2.json.log" || fail "the source did not print the decision"
grep -q 'reused' "$T/receive-a.log" || fail "the receiver did not reuse A's copy"

wire=$(disk_wire "$T/r2.json"); ctl=$(control "$T/r2.json")
limit=$(awk -v c="$changed" -v k="$ctl" 'BEGIN { printf "%.0f", c * 1.05 + k }')
fcmp "$wire" "<=" "$limit" ||
    fail "return trip sent $wire bytes for $changed changed bytes (+ $ctl control)"
cmp "$T/a.img" "$T/b.img" || fail "A's copy differs from B's after the return trip"
"$XL_INCMIG" verify --journal "$T/journal" --image "$T/a.img" --original "$T/a.img.orig" \
    >"$T/verify.log" 2>&1 || fail "verify: $(cat "$T/verify.log")"
grep -q ' 0 mismatches' "$T/verify.log" || fail "verify: $(cat "$T/verify.log")"
# The reference: the same disk copied in full to a third place, same run.
serve_on a "$T/a.img"
trip a c "$T/c.img" "$T/r3.json"
[ "$(base base "$T/r3.json")" = full ] || fail "third trip not a full copy"
cmp "$T/a.img" "$T/c.img" || fail "the full copy differs"
full=$(disk_wire "$T/r3.json")
echo "there and back: return trip $wire bytes in $(json total_s "$T/r2.json") s for $changed changed" \
     "($(awk -v a="$wire" -v b="$changed" 'BEGIN{printf "%.4f", a/b}') x the changed bytes);" \
     "full copy of the same disk $full bytes in $(json total_s "$T/r3.json") s" \
     "($(json allocated_blocks "$T/r3.json") blocks allocated of 262144)"
