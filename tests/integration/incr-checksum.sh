#!/bin/bash
# incr-checksum.sh: the checksum fallback.  A 256 MiB disk goes A -> B,
# the guest rewrites about 5% on B, and B's bitmap file is deleted before
# the domain runs there again: the lineage still holds (B's copy descends
# from the generation A holds) but which blocks changed is unknown, so
# both sides hash every block (XXH3-128) and only differing ones are sent.
# The same disk is then copied in full to a third place, in the same run,
# and the two are printed side by side.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-incr.sh"
head -c 256M /dev/urandom >"$T/a.img"
cp "$T/a.img" "$T/a.img.orig"

serve_on a "$T/a.img"
trip a b "$T/b.img" "$T/r1.json"
[ -f "$T/b.img.incmig-bitmap" ] || fail "B saved no bitmap"
rm "$T/b.img.incmig-bitmap"
serve_on b "$T/b.img"
grep -q "bitmap is missing" "$T/serve-b.log" || fail "serve did not notice the missing bitmap"
writer b 26 "$T/journal"
changed=$(journal_bytes "$T/journal" 65536)
trip b a "$T/a.img" "$T/r2.json"
[ "$(base base "$T/r2.json")" = checksum ] || fail "return trip: $(base base "$T/r2.json"): $(base base_reason "$T/r2.json")"
grep -q 'round 0 is checksum' "$T/receive-a.log" || fail "the receiver did not print the decision"
cmp "$T/a.img" "$T/b.img" || fail "A's copy differs from B's"
"$XL_INCMIG" verify --journal "$T/journal" --image "$T/a.img" --original "$T/a.img.orig" \
    >"$T/verify.log" 2>&1 || fail "verify: $(cat "$T/verify.log")"
grep -q ' 0 mismatches' "$T/verify.log" || fail "verify: $(cat "$T/verify.log")"
sent=$(( $(json base_blocks "$T/r2.json") * 4096 ))
[ "$sent" -le "$changed" ] && [ "$sent" -ge $((changed / 2)) ] ||
    fail "checksums found $sent bytes differing, the guest changed $changed"

# The reference: the same disk copied in full, same machine, same run.
serve_on a "$T/a.img"
trip a c "$T/c.img" "$T/r3.json"
[ "$(base base "$T/r3.json")" = full ] || fail "third trip not a full copy"
cmp "$T/a.img" "$T/c.img" || fail "the full copy differs"
w2=$(disk_wire "$T/r2.json"); w3=$(disk_wire "$T/r3.json")
t2=$(json total_s "$T/r2.json"); t3=$(json total_s "$T/r3.json")
[ "$w2" -lt $((w3 / 4)) ] || fail "checksum path sent $w2 bytes, the full copy $w3"
echo "checksum path: $w2 bytes in $t2 s (hashing $(json base_s "$T/r2.json") s), for $changed changed;" \
     "full copy: $w3 bytes in $t3 s; bytes ratio $(awk -v a="$w2" -v b="$w3" 'BEGIN{printf "%.3f", a/b}')," \
     "time ratio $(awk -v a="$t2" -v b="$t3" 'BEGIN{printf "%.2f", a/b}')"
