# tests/lab/tests/common.sh: helpers of the lab's tests (sourced).
# A test runs in this machine's shell and drives dom0 over ssh; it prints
# "RESULT key=value ..." lines that lab.sh copies into logs/summary, and exits
# 0 pass, 1 fail, 77 skip.
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# The tests' hssh shares one ssh connection per host (ControlMaster, kept
# 60 s after its last use, gone when the host stops): under TCG a new
# connection's key exchange and login cost dom0 seconds (2026-12-01, loaded
# machine: 9-10 s per plain `hssh 1 true`, 0.5-1.2 s multiplexed).  lab.sh's
# own hssh (boot, clock, push) keeps one connection per call.
# The shared connection is made first, alone, with a patient timeout and up
# to 3 tries (2026-12-01, machine at load 15-28: a new connection's banner
# exchange took over 5 s, and a check after a 14-minute migration failed
# for it); the command then runs over it, never twice.
hssh() {
	local n=$1 i; shift
	local o=(-o ControlPath="$LAB/run/ssh-%p" -i "$LAB/out/id_ed25519" -p $((PORTBASE + n)))
	for i in 1 2 3; do
		ssh -o ConnectTimeout=5 "${o[@]}" -O check root@127.0.0.1 2>/dev/null && break
		ssh -o ConnectTimeout=60 $SSHOPTS "${o[@]}" -o ControlMaster=yes -o ControlPersist=900 \
			-fN root@127.0.0.1 2>/dev/null && break
		sleep 2
	done
	ssh $SSHOPTS -o ControlMaster=auto -o ControlPersist=900 "${o[@]}" root@127.0.0.1 "$@"
}
fail() { log "FAIL: $*"; exit 1; }
lg() { local n=$1; shift; hssh "$n" /root/lab/labguest.sh "$@"; }
now() { date +%s.%N; }
el() { echo "$2 - $1" | bc; }
# rcwhy RC: an exit code of hssh, explained (255 = ssh itself failed)
rcwhy() { if [ "$1" = 255 ]; then echo "rc=255: the ssh connection to dom0 failed, not the command"; else echo "rc=$1"; fi; }
needhost() { hssh "$1" true 2>/dev/null || { log "SKIP: host $1 is not up (lab.sh up${2:+ $2})"; exit 77; }; }

# hbgap NAME SINCE HOST...: largest heartbeat gap of guest NAME after time
# SINCE (epoch seconds, this machine's clock), from the console logs of every
# HOST merged by heartbeat number.  Prints "gap_guest=<s> gap_host=<s>
# mean=<s> hb=<n> lost=<n>": gap_guest uses the wall clock the guest prints in
# each line, gap_host the time dom0 saw the line (tail -F | ts); both clocks
# are synced to this machine's at boot.  mean = mean heartbeat interval.
hbgap() {
	local name=$1 since=$2 h; shift 2
	for h in "$@"; do lg "$h" hb "$name"; done | awk -v since="$since" '
	$3 + 0 >= since - 1 && !(($1, $2) in t) {
		t[$1, $2] = $3; if ($2 + 0 > max[$1]) max[$1] = $2 + 0
		if (!($1 in min) || $2 + 0 < min[$1]) min[$1] = $2 + 0 }
	END {
		for (k = 1; k <= 2; k++) {
			K = (k == 1) ? "G" : "H"; g = 0; c = 0; lost = 0; p = ""; sum = 0
			if (!(K in min)) { out = out " " K "=none"; continue }
			for (s = min[K]; s <= max[K]; s++) {
				if (!((K, s) in t)) { lost++; continue }
				if (p != "") { d = t[K, s] - p; if (d > g) g = d; sum += d; c++ }
				p = t[K, s]
			}
			if (K == "G") out = sprintf("gap_guest=%.2f mean=%.2f hb=%d lost=%d", g, c ? sum / c : 0, c + 1, lost)
			else out = out sprintf(" gap_host=%.2f", g)
		}
		print out
	}'
}
