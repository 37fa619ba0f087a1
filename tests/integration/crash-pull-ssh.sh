#!/bin/bash
# crash-pull-ssh.sh: crash-safe PULL over the default ssh transport.  The
# receiver (started by migrate through ssh, with a rendezvous socket) is
# killed -9 during PULL and restarted by hand with `migrate-receive
# --resume`: it serves the guest's disk again and waits on the rendezvous
# socket, where the source's next ssh session (`--attach`) finds it.  Then
# migrate is killed -9 during PULL and `migrate --resume` finishes over a
# new ssh session.  Each time the guest reads nothing stale and the
# destination image verifies.
#
# Timing, so that a loaded machine cannot make it flaky: the cap drops to
# 256 KB/s once PUSH has converged (before GO), so that PULL lasts seconds
# and the kill lands in it; a kill that came after PULL ended fails with
# that reason.  A process killed -9 keeps its state file locked until it
# has exited (a thread in an fdatasync on a loaded disk delays that), so
# the restart waits for it to be gone.
. "$(dirname "$0")/lib.sh"
start_sshd
BASE=$T

# pid of the receiver itself (not the shell ssh runs it through)
receiver_pid() {
    local p
    for p in $(pgrep -f -- "--image $T/dst.img"); do
        [ "$(cat /proc/$p/comm 2>/dev/null)" = sh ] && continue
        grep -qa -- 'migrate-receive' /proc/$p/cmdline 2>/dev/null && { echo "$p"; return; }
    done
}

# gone PID: exited (a zombie has released its files and locks too)
gone() { [ ! -e "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]; }

# pull_not_done VICTIM: the kill landed in PULL, not after it
pull_not_done() {
    ! grep -q 'migrate-receive: PULL complete' "$T/migrate.log" ||
        fail "$1: PULL had already ended when $1 was killed (the machine too slow for the 256 KB/s cap?)"
}

one_run() {
    local victim=$1
    T=$BASE/$victim; mkdir -p "$T/state"; unset DST_SOCK
    local SD=$T/state
    mkimage "$T/src.img" 16 60
    start_serve "$T/src.img" --memory 256K
    DST_SOCK=$T/dst.sock
    start_guest 4M --reconnect-timeout 120
    "$XL_INCMIG" migrate -s "$SSH" --receiver "$XL_INCMIG migrate-receive --state-dir $SD" \
        --dest-image "$T/dst.img" --dest-nbd "unix:$DST_SOCK" --policy single \
        --bandwidth 4M --reconnect 60 --state-dir "$SD" --no-progress \
        --control "$T/mig.ctl" \
        "sim:$SRC_CTL" 127.0.0.1 >"$T/migrate.out" 2>"$T/migrate.log" & MIG=$!
    PIDS="$PIDS $MIG"
    wait_for "grep -q 'PUSH converged' '$T/migrate.log'" 60 || fail "$victim: PUSH never converged"
    "$XL_INCMIG" migrate-set-bandwidth "$T/mig.ctl" 256K >/dev/null 2>"$T/set.log" ||
        fail "$victim: migrate-set-bandwidth: $(cat "$T/set.log")"
    wait_for "grep -q 'GO:' '$T/migrate.log'" 60 || fail "$victim: never reached GO"
    sleep 0.2
    if [ "$victim" = receiver ]; then
        local rp; rp=$(receiver_pid)
        [ -n "$rp" ] || fail "receiver: no receiver process found"
        kill -9 "$rp"
        pull_not_done receiver
        local t0; t0=$(date +%s%N)
        wait_for "gone $rp" 60 || fail "receiver: still there 60 s after kill -9"
        echo "receiver gone $(( ($(date +%s%N) - t0) / 1000000 )) ms after kill -9"
        local st; st=$(ls "$SD"/receive-*.state 2>/dev/null)
        [ -n "$st" ] || fail "receiver: no state file after GO"
        bg "$XL_INCMIG" migrate-receive --resume "$st" 2>"$T/receive.log"
        RECV_PID=$LASTPID
        wait $MIG || fail "receiver: migrate failed after the receiver restarted: $(tail -5 "$T/migrate.log")"
        grep -q "link re-established" "$T/migrate.log" || fail "receiver: PULL not resumed"
        grep -q "source reconnected" "$T/receive.log" || fail "receiver: the restarted receiver saw no source"
    else
        kill -9 "$MIG"; wait "$MIG" 2>/dev/null || true
        pull_not_done migrate
        local st; st=$(ls "$SD"/migrate-*.state 2>/dev/null)
        [ -n "$st" ] || fail "migrate: no state file after GO"
        mv "$T/migrate.log" "$T/migrate-1.log"
        "$XL_INCMIG" migrate --resume "$st" --no-progress >"$T/migrate.out" 2>"$T/migrate.log" ||
            fail "migrate: --resume failed: $(tail -5 "$T/migrate.log")"
        grep -q "link re-established" "$T/migrate.log" || fail "migrate: PULL not resumed"
        RECV_PID=$(receiver_pid)
    fi
    sleep 0.5
    stop_guest
    [ -z "$RECV_PID" ] || wait_for "! kill -0 $RECV_PID" 15 || fail "$victim: receiver did not exit"
    verify_image "$T/dst.img"
    wait_for "! kill -0 $SERVE_PID" 10 || fail "$victim: the source was never released"
    [ -z "$(ls "$SD")" ] || fail "$victim: state files left: $(ls "$SD")"
    echo "ssh, $victim killed after GO: resumed, disk verified"
}

one_run receiver
one_run migrate
T=$BASE
