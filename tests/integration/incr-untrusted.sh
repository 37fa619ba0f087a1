#!/bin/bash
# incr-untrusted.sh: copies incmig cannot prove are never trusted.
#  1. A's copy modified behind incmig's back (written while nothing
#     tracked it): the way back to A is refused, A's file untouched, the
#     guest still on B; once the operator removes it, a full copy.
#  2. A crash between a write and the bitmap's save (serve killed while
#     the guest writes): that copy's claim is void, the way there refused.
#  3. An unrelated disk of the same size: refused where A holds its copy;
#     to a free path, a full copy.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-incr.sh"
sparse_image "$T/a.img" 64 16

serve_on a "$T/a.img"
trip a b "$T/b.img" "$T/r1.json"

# what each copy proves, as `xl-incmig lineage` says
"$XL_INCMIG" lineage "$T/a.img" "$T/b.img" >"$T/lin1" || fail "copies not proven: $(cat "$T/lin1")"
grep -q "b.img: generation [0-9a-f]*, proven; 0 of 16384 blocks written since" "$T/lin1" ||
    fail "lineage: $(cat "$T/lin1")"

# 1. behind incmig's back
head -c 4096 /dev/urandom | dd of="$T/a.img" bs=4096 seek=100 conv=notrunc status=none
"$XL_INCMIG" lineage --json "$T/a.img" >"$T/lin2" && fail "a modified copy is proven: $(cat "$T/lin2")"
grep -q '"proven":false.*changed after its lineage was written' "$T/lin2" || fail "lineage: $(cat "$T/lin2")"
cp "$T/a.img" "$T/a.before"
serve_on b "$T/b.img"
receive_on a "$T/a.img"
migrate_from b "$T/r2.json" && fail "migrated onto a copy modified behind incmig's back"
grep -q "changed after its lineage was written" "$T/r2.json.log" ||
    fail "the refusal does not say why: $(tail -3 "$T/r2.json.log")"
cmp "$T/a.img" "$T/a.before" || fail "the refused copy was touched"
kill -0 "$SERVE_PID" 2>/dev/null || fail "the domain did not keep running on B"
rm "$T/a.img"
trip b a "$T/a.img" "$T/r3.json"
[ "$(base base "$T/r3.json")" = full ] || fail "after removal: $(base base "$T/r3.json")"
cmp "$T/a.img" "$T/b.img" || fail "A's full copy differs"

# 2. a crash between a write and the bitmap's save, on B
cp "$T/b.img" "$T/b.before"
serve_on b "$T/b.img"
bg "$XL_INCMIG" guest --nbd "nbd+unix:///?socket=$T/b.sock" --seconds 0 --rate 20M \
    --block-size 64K --journal "$T/j2" >"$T/j2.log" 2>&1
wait_for "! cmp -s '$T/b.img' '$T/b.before'" 10 ||
    fail "the guest wrote nothing"
kill -9 "$SERVE_PID"
cp "$T/b.img" "$T/b.before"
serve_on a "$T/a.img"
receive_on b "$T/b.img"
migrate_from a "$T/r4.json" && fail "migrated onto a copy whose tracker crashed"
grep -q "did not close it (a crash?)" "$T/r4.json.log" ||
    fail "the refusal does not say why: $(tail -3 "$T/r4.json.log")"
cmp "$T/b.img" "$T/b.before" || fail "the refused copy was touched"
kill -0 "$SERVE_PID" 2>/dev/null || fail "the domain did not keep running on A"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true

# 3. an unrelated disk of the same size
head -c 64M /dev/urandom >"$T/x.img"
serve_on x "$T/x.img"
receive_on a "$T/a.img"
migrate_from x "$T/r5.json" && fail "an unrelated disk went onto A's copy"
grep -q "unrelated to the source's" "$T/r5.json.log" ||
    fail "the refusal does not say why: $(tail -3 "$T/r5.json.log")"
trip x c "$T/c.img" "$T/r6.json"
[ "$(base base "$T/r6.json")" = full ] || fail "unrelated disk: $(base base "$T/r6.json")"
cmp "$T/x.img" "$T/c.img" || fail "the full copy differs"
echo "untrusted: modified, crashed and unrelated copies refused with their reason; full copies instead"
