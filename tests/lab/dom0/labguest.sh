#!/bin/bash
# dom0/labguest.sh: runs inside dom0 (pushed to /root/lab by lab.sh wait).
# Drives the PV test guest (guest/init) and reads its console log.
#   labguest.sh start NAME [DISK] [--wipe]  create the guest on DISK (default
#           /dev/vdb, the disk shared by both hosts), wait for WL-READY
#   labguest.sh watch NAME    timestamp NAME's console lines as dom0 sees them
#   labguest.sh check NAME    ask the running guest to check its disk; print
#           the CHECK line; exit 0 only on CHECK OK
#   labguest.sh hb NAME       heartbeats seen on this host, one a line:
#           "G <seq> <guest wallclock>" and "H <seq> <dom0 wallclock>"
#   labguest.sh log NAME      the guest's console log(s)
#   labguest.sh cmd NAME 'OP ARGS[; OP ARGS]...'   command-mode guest (started
#           with LABGUEST_EXTRA=labmode=cmd, see guest/init): send, wait for the
#           ACK (LABGUEST_TMO seconds, 300), print it; exit 0 only on rc=0
#   labguest.sh send NAME 'OP ...'   the same without waiting: prints the id
#   labguest.sh ack NAME ID          print ID's ACK line if it came (exit 1 if not)
# Env: LABGUEST_EXTRA  appended to the guest's kernel command line (start).
#      LABGUEST_DISKOPTS  more of xvda's disk spec, e.g. script=block-incmig
#                         (start; test 90).
# xenconsoled (restarted by lab-ready) logs guest consoles to $L, with
# 1-second timestamps only; for sub-second host-side times a tail -F | ts
# writes $D/NAME.hostts next to it.
set -u
L=/var/log/xen/console; D=/root/lab
BB=$D/busybox
cmd=$1; name=$2
logs() { cat "$L/guest-$name.log" "$L/guest-$name--incoming.log" 2>/dev/null; }
now() { date +%s.%N; }
case $cmd in
start)
	disk=${3:-/dev/vdb}; [ "${4:-}" = --wipe ] && dd if=/dev/zero of="$disk" bs=1M count=2 conv=fsync 2>/dev/null
	cat >"$D/$name.cfg" <<E2
name = "$name"
type = "pv"
kernel = "$D/guest-vmlinuz"
ramdisk = "$D/guest-initrd.gz"
extra = "console=hvc0 loglevel=4 ${LABGUEST_EXTRA:-}"
memory = 128
vcpus = 1
disk = [ 'format=raw, vdev=xvda, access=rw, ${LABGUEST_DISKOPTS:+$LABGUEST_DISKOPTS, }target=$disk' ]
on_crash = "preserve"
E2
	rm -f "$L/guest-$name.log" "$L/guest-$name--incoming.log" "$D/$name.hostts"
	t0=$(now)
	xl create "$D/$name.cfg" || exit 1
	"$0" watch "$name"
	for i in $(seq 1 600); do
		logs | grep -a -q 'WL-READY\|WL-NODISK' && break
		sleep 0.2
	done
	t1=$(now)
	logs | grep -a -q WL-READY || { echo "guest $name not ready:"; logs | tail -20; exit 1; }
	logs | grep -a 'CHECK\|WL-FORMAT' | tail -1
	echo "guest $name ready after $(echo "$t1 - $t0" | bc)s"
	;;
watch)
	# host-side times of the guest's console lines; also run on a migration's
	# destination before the guest arrives
	rm -f "$D/$name.hostts"
	setsid sh -c "tail -n +1 -F '$L/guest-$name.log' '$L/guest-$name--incoming.log' 2>/dev/null | $BB ts '%.s' >'$D/$name.hostts'" \
		</dev/null >/dev/null 2>&1 &
	;;
check)
	before=$(logs | grep -a -c 'CHECK ')
	id=$(xl domid "$name") || exit 1
	tty=$(xenstore-read "/local/domain/$id/console/tty") || exit 1
	echo check >"$tty"
	for i in $(seq 1 300); do
		[ "$(logs | grep -a -c 'CHECK ')" -gt "$before" ] && break
		sleep 0.2
	done
	r=$(logs | grep -a -o 'CHECK .*' | tail -1 | tr -d '\r')
	[ "$(logs | grep -a -c 'CHECK ')" -gt "$before" ] || { echo "no CHECK answer from $name"; exit 1; }
	echo "$r"
	case $r in "CHECK OK"*) exit 0 ;; *) exit 1 ;; esac
	;;
hb)
	logs | tr -d '\r' | awk '{ for (k = 2; k < NF; k++) if ($k == "HB") { print "G", $(k + 1), $(k - 1); next } }'
	[ -f "$D/$name.hostts" ] && tr -d '\r' <"$D/$name.hostts" | awk '{ for (k = 2; k < NF; k++) if ($k == "HB") { print "H", $(k + 1), $1; next } }'
	;;
log) logs ;;
send)
	id=$(( $(cat "$D/$name.cmdid" 2>/dev/null || echo 0) + 1 )); echo $id >"$D/$name.cmdid"
	domid=$(xl domid "$name") || exit 1
	tty=$(xenstore-read "/local/domain/$domid/console/tty") || exit 1
	echo "$id $3" >"$tty" || exit 1
	echo $id
	;;
ack)
	r=$(logs | tr -d '\r' | grep -a -o "ACK $3 rc=.*" | tail -1)
	[ -n "$r" ] || exit 1
	echo "$r"
	;;
cmd)
	id=$("$0" send "$name" "$3") || exit 1
	tmo=${LABGUEST_TMO:-300}; t0=$(date +%s)
	until r=$("$0" ack "$name" $id); do
		[ $(( $(date +%s) - t0 )) -lt $tmo ] || { echo "no ACK $id from $name after ${tmo}s ($3)"; exit 1; }
		sleep 0.1
	done
	echo "$r"
	case $r in *" rc=0"*) exit 0 ;; *) exit 1 ;; esac
	;;
*) echo "usage: labguest.sh start|check|hb|log|cmd|send|ack NAME" >&2; exit 2 ;;
esac
