#!/bin/bash
# migrate-yield.sh: without --bandwidth, PUSH yields to the guest: while
# the guest is busy it is probed (PUSH stops for 0.1 s to measure the
# guest alone) and PUSH's cap follows its latency and rate, and PUSH's
# reads go at the IDLE I/O class; an idle guest is never probed (PUSH runs
# uncapped); --bandwidth max or a cap turns yielding and the IDLE class
# off.  (How much rate the guest keeps is the benchmark's to measure: a
# timing figure here would flake on a loaded machine.)
. "$(dirname "$0")/lib.sh"
# 256 MiB: on an idle machine a 64 MiB PUSH took 0.11 s, about one
# 0.1 s yield window, and the busy guest was never sampled (CI=true run)
mkimage "$T/src.img" 256 100

# run RATE [migrate options]: one migration with the guest writing RATE,
# one request in flight (and $GUEST_EXTRA)
run() {
    local rate=$1; shift
    rm -f "$T/dst.img" "$T/journal" "$T/report.json"
    cp --sparse=always "$T/src.img.orig" "$T/src.img"
    start_serve "$T/src.img"
    start_guest "$rate" --queue-depth 1 ${GUEST_EXTRA:-}
    start_receiver
    sleep 1
    run_migrate "$@" || fail "migration failed ($rate $*)"
    stop_guest
    wait_for "! kill -0 $RECV_PID" 10 || fail "receiver did not exit"
    verify_image "$T/dst.img"
}

run 1G
p=$(json push_yield_probes)
echo "busy guest: $p probes, $(json push_yield_backoffs) back-offs, PUSH $(json push_s) s"
fcmp "$p" '>=' 1 || fail "a busy guest was never probed: PUSH did not yield"
i=$(json push_idle_reads)
echo "busy guest: $i PUSH reads at the idle I/O class"
fcmp "$i" '>=' 1 || fail "PUSH yielded but none of its reads went at the idle I/O class"

GUEST_EXTRA="--read-rate 0" run 0
p=$(json push_yield_probes)
echo "idle guest: $p probes, PUSH $(json push_s) s"
[ "$p" = 0 ] || fail "an idle guest was probed $p times"

run 1G --bandwidth max
p=$(json push_yield_probes)
echo "busy guest, --bandwidth max: $p probes, PUSH $(json push_s) s"
[ "$p" = 0 ] || fail "--bandwidth max still yielded ($p probes)"
[ "$(json push_idle_reads)" = 0 ] || fail "--bandwidth max still read at the idle I/O class"

run 1G --bandwidth 400M
[ "$(json push_yield_probes)" = 0 ] || fail "a cap still yielded"
[ "$(json push_idle_reads)" = 0 ] || fail "a cap still read at the idle I/O class"
echo PASS
