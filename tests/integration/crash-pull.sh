#!/bin/bash
# crash-pull.sh: the kill loop of crash-safe PULL.  Each run migrates a
# writing guest with PULL long enough to hit, then stops one process after
# GO at a random instant: the receiver or migrate, with kill -9 or SIGTERM
# (which must say what is owed and the exact command to finish).  Then it
# finishes with that command (migrate --resume / migrate-receive --resume)
# and checks: the migration completes, the guest never read stale data
# (0 mismatches), the destination image verifies against the guest's
# journal, and no state file is left.
#   CRASH_RUNS  runs (default 4: each victim with each signal, one run
#               aimed at each phase after GO; `make check-long` runs 30)
. "$(dirname "$0")/lib.sh"
RUNS=${CRASH_RUNS:-4}
BASE=$T
SEED=${CRASH_SEED:-$RANDOM}
RANDOM=$SEED
echo "crash-pull: $RUNS runs, seed $SEED"
declare -A COUNT

# phase of the migration when the victim stopped, from the logs:
# pull (background push), pullend (every block sent, COMPLETE awaited),
# complete (COMPLETE sent, END awaited), done (END received)
phase_now() {
    if grep -q 'migration complete' "$T/receive.log"; then echo done
    elif grep -q 'PULL complete' "$T/receive.log"; then echo complete
    elif grep -q 'PULL_END sent' "$T/migrate.log"; then echo pullend
    else echo pull; fi
}

# one_run N VICTIM SIGNAL WHEN: WHEN is seconds after GO, or an event
# (pullend, complete) to wait for first
one_run() {
    local run=$1 victim=$2 sig=$3 when=$4
    T=$BASE/run$run; mkdir -p "$T/state"; unset DST_SOCK
    local SD=$T/state
    mkimage "$T/src.img" 16 60
    start_serve "$T/src.img" --memory 256K
    start_guest 4M --reconnect-timeout 120
    start_receiver --reconnect 60 --state-dir "$SD"
    bg_migrate --policy single --bandwidth 4M --reconnect 60 --state-dir "$SD" --debug
    wait_for "grep -q 'GO:' '$T/receive.log'" 60 || fail "run $run: never reached GO"
    local pid=$RECV_PID other=$MIG frozen=""
    [ "$victim" = migrate ] && { pid=$MIG; other=$RECV_PID; }
    # The late phases are held still while the victim is stopped: the
    # receiver frozen (SIGSTOP) a moment after GO, the source sends what
    # fits in the sockets' buffers and, when the rest does, PULL_END, and
    # waits for COMPLETE (pullend); for complete, the source is frozen
    # then and the receiver thawed: it completes and waits for an END that
    # cannot come.  Each victim is killed in that state.
    case $when in
    pullend|complete)
        sleep 0.3
        kill -STOP "$RECV_PID"
        wait_for "grep -q 'PULL_END sent' '$T/migrate.log'" 3 || true
        frozen=$RECV_PID
        if [ "$when" = complete ]; then
            kill -STOP "$MIG"; kill -CONT "$RECV_PID"; frozen=$MIG
            wait_for "grep -q 'PULL complete' '$T/receive.log'" 5 || true
        fi ;;
    *) sleep "$when" ;;
    esac
    local phase; phase=$(phase_now)
    kill -"$sig" "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -z "$frozen" ] || kill -CONT "$frozen" 2>/dev/null || true
    COUNT[$victim-$sig-$phase]=$(( ${COUNT[$victim-$sig-$phase]:-0} + 1 ))
    echo "$(date +%T) run $run: $victim killed ($sig) at $when after GO, phase $phase"
    local fin=""
    if [ "$victim" = receiver ]; then
        if [ "$sig" = TERM ] && [ "$phase" = pull ]; then
            fin=$(grep -o 'Restart this receiver with: [^(]*' "$T/receive.log" | sed 's/.*with: //; s/ *$//')
            [ -n "$fin" ] || fail "run $run: the stopped receiver did not say how to finish"
        fi
        local st; st=$(ls "$SD"/receive-*.state 2>/dev/null || true)
        if [ -n "$st" ]; then
            [ -z "$fin" ] || [ "$fin" = "xl-incmig migrate-receive --resume $st" ] ||
                fail "run $run: receiver said '$fin', its state file is $st"
            mv "$T/receive.log" "$T/receive-1.log"
            bg "$XL_INCMIG" migrate-receive --resume "$st" --state-dir "$SD" --reconnect 5 2>"$T/receive.log"
            RECV_PID=$LASTPID
        else
            # killed after END: the destination's disk is complete, but
            # nothing serves it to the guest any more (as for any disk
            # server killed): the disk must verify, the guest have read
            # nothing stale
            wait "$MIG" || fail "run $run: migrate failed"
            kill -TERM "$GUEST_PID"; sleep 0.3; kill -TERM "$GUEST_PID" 2>/dev/null || true
            wait "$GUEST_PID" || true
            grep -q ' 0 mismatches' "$T/guest.log" || fail "run $run: guest reported mismatches"
            verify_image "$T/dst.img"
            [ -z "$(ls "$SD")" ] || fail "run $run: state files left: $(ls "$SD")"
            return
        fi
        wait "$MIG" || fail "run $run: migrate failed after the receiver restarted"
    else
        if [ "$sig" = TERM ] && [ "$phase" = pull ]; then
            fin=$(grep -o 'Finish with: .*' "$T/migrate.log" | sed 's/Finish with: //')
            [ -n "$fin" ] || fail "run $run: the stopped migrate did not say how to finish"
            # what it owes is the final bitmap (narrowed just after GO), not
            # every block as the state file was prepared
            local owes final
            owes=$(sed -n 's/.*up to \([0-9]*\) of its blocks are only on this host.*/\1/p' "$T/migrate.log")
            final=$(sed -n 's/.*stop-and-copy: \([0-9]*\) blocks of disk .* left on the source.*/\1/p' "$T/receive.log")
            [ -n "$owes" ] && [ "$owes" = "$final" ] ||
                fail "run $run: migrate owes '$owes' blocks, the final bitmap had '$final'"
        fi
        local st; st=$(ls "$SD"/migrate-*.state 2>/dev/null || true)
        if [ -n "$st" ]; then
            [ -z "$fin" ] || [ "$fin" = "xl-incmig migrate --resume $st" ] ||
                fail "run $run: migrate said '$fin', its state file is $st"
            mv "$T/migrate.log" "$T/migrate-1.log"
            "$XL_INCMIG" migrate --resume "$st" --state-dir "$SD" --no-progress \
                >"$T/migrate.out" 2>"$T/migrate.log" || fail "run $run: migrate --resume failed"
        fi
    fi
    wait_for "grep -q 'PULL complete' '$T/receive.log' || grep -q 'PULL complete' '$T/receive-1.log'" 60 ||
        fail "run $run: PULL never completed"
    sleep 0.5
    stop_guest
    wait_for "! kill -0 $RECV_PID" 15 || fail "run $run: receiver did not exit"
    verify_image "$T/dst.img"
    wait_for "! kill -0 $SERVE_PID" 10 || fail "run $run: the source was never released"
    [ -z "$(ls "$SD")" ] || fail "run $run: state files left: $(ls "$SD")"
    rm -f "$T"/*.img "$T"/*.orig
}

# the short version: each victim, each signal, aimed at each phase
if [ "$RUNS" -le 4 ]; then
    plan=("receiver 9 0.2" "migrate 9 pullend" "receiver TERM complete" "migrate TERM 0.1")
    for i in $(seq 0 $((RUNS - 1))); do one_run $i ${plan[$i]}; done
else
    for i in $(seq 0 $((RUNS - 1))); do
        victim=receiver; [ $((RANDOM % 2)) = 1 ] && victim=migrate
        sig=9; [ $((RANDOM % 3)) = 0 ] && sig=TERM
        case $((RANDOM % 4)) in
        0) when=pullend ;; 1) when=complete ;;
        *) when="0.$(( RANDOM % 10 ))" ;;
        esac
        one_run $i $victim $sig "$when"
    done
fi
T=$BASE
for k in "${!COUNT[@]}"; do echo "  $k: ${COUNT[$k]}"; done | sort
echo "crash-pull: $RUNS runs, every one finished with a verified disk"
