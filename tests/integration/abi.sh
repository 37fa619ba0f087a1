#!/bin/bash
# abi.sh: libincmig exports its public API only (the version script), and
# xl-incmig uses nothing else from it.  The two whole commands that xl's
# --incremental-storage patch calls are exported, and xl-incmig's migrate
# and migrate-receive go through them (so every migration of the suite
# runs the code xl runs).
. "$(dirname "$0")/lib.sh"
requires nm
LIB=$TESTS_BUILDDIR/../libxl-ext/.libs/libincmig.so
BIN=$TESTS_BUILDDIR/../tools/.libs/xl-incmig
[ -f "$BIN" ] || BIN=$TESTS_BUILDDIR/../tools/xl-incmig
[ -f "$LIB" ] || { echo "SKIP: no shared library built"; exit 77; }
nm -D --defined-only "$LIB" | awk '$2 ~ /[TDBRW]/ {print $3}' | sed 's/@.*//' | sort -u >"$T/exported"
[ -s "$T/exported" ] || fail "nothing exported?"
grep -v '^incmig_[a-z]' "$T/exported" | grep -v '^INCMIG_' >"$T/bad" || true
[ ! -s "$T/bad" ] || fail "exported outside the API: $(tr '\n' ' ' <"$T/bad")"
grep -q '^incmig__' "$T/exported" && fail "internal symbols exported"
# every exported symbol is declared in the public header
while read -r sym; do
    grep -q "\\b$sym(" "$TESTS_SRCDIR/../libxl-ext/incmig.h" || fail "$sym is exported but not in incmig.h"
done <"$T/exported"
nm -u "$BIN" | awk '{print $2}' | grep '^incmig__' && fail "xl-incmig uses internal symbols"
for sym in incmig_migrate_main incmig_receive_main; do
    grep -qx "$sym" "$T/exported" || fail "$sym (xl's entry point) is not exported"
    nm -u "$BIN" | awk '{print $2}' | sed 's/@.*//' | grep -qx "$sym" ||
        fail "xl-incmig does not go through $sym"
done
# and the version script names them (what the -dev package's users link)
for sym in incmig_migrate_main incmig_receive_main; do
    grep -q "^ *$sym;" "$TESTS_SRCDIR/../libxl-ext/libincmig.sym" || fail "$sym not in libincmig.sym"
done
echo "abi: $(wc -l <"$T/exported") symbols exported, all in incmig.h"
