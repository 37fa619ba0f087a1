#!/bin/bash
# migrate-policies.sh: the pre-copy-only policy (blocks sent while paused,
# no PULL) and the single-pass policy (round 0 only, then PULL), with a
# writing guest and compression on.
. "$(dirname "$0")/lib.sh"
for policy in precopy single; do
    rm -f "$T"/*.sock "$T"/*.ctl "$T/dst.img" "$T/journal"
    mkimage "$T/src.img" 64 50
    start_serve "$T/src.img"
    start_guest 10M
    start_receiver
    sleep 1
    run_migrate --policy "$policy" --compress || fail "$policy: migration failed"
    sleep 1
    stop_guest
    wait_for "! kill -0 $RECV_PID" 10 || fail "$policy: receiver did not exit"
    verify_image "$T/dst.img"
    rounds=$(json rounds)
    bg_blocks=$(json background_blocks)
    case $policy in
    precopy) [ "$bg_blocks" -eq 0 ] || fail "precopy pulled $bg_blocks blocks" ;;
    single) [ "$rounds" -eq 1 ] || fail "single-pass ran $rounds rounds" ;;
    esac
    echo "$policy: rounds $rounds, pulled $bg_blocks blocks, downtime $(json downtime_ms) ms"
    wait_for "! kill -0 $SERVE_PID" 10 || fail "$policy: source export not released"
done
