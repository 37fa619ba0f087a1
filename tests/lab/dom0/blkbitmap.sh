#!/bin/bash
# dom0/blkbitmap.sh: runs inside dom0 (pushed to /root/lab by lab.sh wait).
# Drives incmig's xen-blkback write tracking (blkback-patch/, ABI in
# blkback-patch/ABI-sysfs-xen-blkback-tracking.txt) of a guest's first VBD
# for tests/40-blkback-bitmap.sh.  Block sets are printed as ranges,
# "a-b c ..." ascending, "-" when empty.
#   blkbitmap.sh load-module KO   swap in the patched module (no VBD may exist)
#   blkbitmap.sh stock-module     back to the distribution's module
#   blkbitmap.sh state NAME       incmig-tracking and incmig_block_size
#   blkbitmap.sh set NAME BS      write incmig-track-block-size (any string),
#           wait for blkback's answer in incmig-tracking, print it
#   blkbitmap.sh read NAME        snapshot + read: "bytes=<n> <ranges>"
#   blkbitmap.sh ctl NAME WORD    write WORD to incmig_control: "ok" or the error
#   blkbitmap.sh cat NAME         read incmig_bitmap alone: "ok" or the error
#   blkbitmap.sh stage NAME BYTES [FILE]  write BYTES bytes (of FILE, else
#           zeros) to incmig_bitmap_load: "ok" or the error
#   blkbitmap.sh bits RANGES NBYTES  a bitmap file's bytes on stdout
#   blkbitmap.sh race NAME FIRST STRIDE N   the guest writes blocks FIRST +
#           k*STRIDE (k < N) while this snapshots and reads in a loop; prints
#           "snaps=<n> nonempty=<n> twice=<blocks in 2+ snapshots>" and
#           "union <ranges>" (a last snapshot after the guest's ACK included)
#   blkbitmap.sh racefull NAME 'OPS'   the same for any guest command OPS,
#           for bitmaps too large to list: prints the guest's ACK line,
#           "snaps=<n>" and "union set=<blocks set in any snapshot>
#           nbits=<blocks of the VBD> missing=<first 8 unset ranges, - if
#           none> beyond=<bits set past the last block>"
#   blkbitmap.sh marked NAME      statistics/incmig_marked
set -u
cmd=$1; name=${2:-}
L=/root/lab/labguest.sh

# ranges: block numbers on stdin (one a line, any order) -> "a-b c ..."
ranges() {
	sort -n -u | awk 'NR == 1 { a = b = $1; next }
		$1 == b + 1 { b = $1; next }
		{ out = out " " (a == b ? a : a "-" b); a = b = $1 }
		END { if (NR) out = out " " (a == b ? a : a "-" b); else out = " -"; print substr(out, 2) }'
}
# blocks: bitmap bytes on stdin -> set block numbers, one a line
blocks() {
	od -An -v -tu1 | awk '{ for (i = 1; i <= NF; i++) { v = $i
		for (b = 0; b < 8 && v; b++) { if (v % 2) print n * 8 + b; v = int(v / 2) }
		n++ } }'
}
# union NBITS FILE...: the OR of the bitmaps in FILEs, summed up (racefull);
# whole bytes of 0 or 255 take the short way (a near-full bitmap of 2^19
# blocks is read in seconds under TCG)
union() {
	local nbits=$1 f; shift
	for f in "$@"; do od -An -v -tu1 "$f"; echo "--"; done | awk -v nbits="$nbits" '
	function or8(a, b,   r, p) { r = 0; for (p = 1; p < 256; p *= 2) if (int(a / p) % 2 || int(b / p) % 2) r += p; return r }
	function gap(e) { if (ng < 8) miss = miss " " (gs == e ? gs : gs "-" e); ng++; ing = 0 }
	BEGIN { n = 0 }
	$1 == "--" { n = 0; next }
	{ for (i = 1; i <= NF; i++) { v = $i + 0; if (v) u[n] = (n in u) ? or8(u[n], v) : v; n++ } if (n > nb) nb = n }
	END {
		for (k = 0; k < nb; k++) {
			v = (k in u) ? u[k] : 0
			if (k * 8 + 8 <= nbits && (v == 0 || v == 255)) {
				if (v == 255) { set += 8; if (ing) gap(k * 8 - 1) } else if (!ing) { ing = 1; gs = k * 8 }
				continue
			}
			for (b = 0; b < 8; b++) {
				bit = k * 8 + b; on = v % 2; v = int(v / 2)
				if (bit >= nbits) { beyond += on; continue }
				if (on) { set++; if (ing) gap(bit - 1) } else if (!ing) { ing = 1; gs = bit }
			}
		}
		if (ing) gap(nbits - 1)
		print "union set=" set + 0 " nbits=" nbits " missing=" (ng ? substr(miss, 2) (ng > 8 ? " ..." : "") : "-") " beyond=" beyond + 0
	}'
}
vbd() {
	local id
	id=$(xl domid "$name") || exit 1
	V=$(ls -d /sys/bus/xen-backend/devices/vbd-$id-* 2>/dev/null | head -1)
	[ -n "$V" ] || { echo "no VBD of $name (domain $id)"; exit 1; }
	BE=/local/domain/0/backend/vbd/$id/${V##*-}
}
err() { sed 's/.*: //' | tr '\n' ' ' | sed 's/ $//'; }
snapread() { # snapshot + read into $1; prints the error if any
	local e
	e=$( { echo snapshot >"$V/incmig_control"; } 2>&1) || { echo "snapshot: $(echo "$e" | err)"; return 1; }
	e=$( { cat "$V/incmig_bitmap" >"$1"; } 2>&1) || { echo "read: $(echo "$e" | err)"; return 1; }
}

case $cmd in
load-module)
	ko=$2
	# a guest destroyed just before (test 30) may take a few seconds to go
	for i in $(seq 1 300); do ls /sys/bus/xen-backend/devices/ 2>/dev/null | grep -q '^vbd-' || break; sleep 0.1; done
	ls /sys/bus/xen-backend/devices/ 2>/dev/null | grep -q '^vbd-' && { echo "a VBD exists: not swapping xen-blkback"; exit 1; }
	if [ -d /sys/module/xen_blkback ]; then rmmod xen_blkback || exit 1; fi
	insmod "$ko" || exit 1
	[ -d /sys/kernel/xen-blkback-incmig ] || { echo "loaded module has no /sys/kernel/xen-blkback-incmig"; exit 1; }
	echo "incmig_tracking=$(modinfo -F incmig_tracking "$ko") vermagic=\"$(modinfo -F vermagic "$ko")\" kernel=$(uname -r)"
	;;
stock-module)
	for i in $(seq 1 300); do ls /sys/bus/xen-backend/devices/ 2>/dev/null | grep -q '^vbd-' || break; sleep 0.1; done
	ls /sys/bus/xen-backend/devices/ 2>/dev/null | grep -q '^vbd-' && { echo "a VBD exists"; exit 1; }
	rmmod xen_blkback 2>/dev/null; modprobe xen-blkback && echo "stock xen-blkback: incmig_tracking=$(modinfo -F incmig_tracking xen-blkback)"
	;;
state)
	vbd
	echo "tracking=\"$(xenstore-read "$BE/incmig-tracking" 2>/dev/null)\" block_size=$(cat "$V/incmig_block_size")"
	;;
set)
	vbd
	xenstore-rm "$BE/incmig-tracking" 2>/dev/null
	xenstore-write "$BE/incmig-track-block-size" "$3" || exit 1
	for i in $(seq 1 100); do
		r=$(xenstore-read "$BE/incmig-tracking" 2>/dev/null) && break
		sleep 0.1
	done
	[ -n "${r:-}" ] || { echo "no answer in $BE/incmig-tracking"; exit 1; }
	echo "$r"
	;;
read)
	vbd
	f=$(mktemp); snapread "$f" || { rm -f "$f"; exit 1; }
	echo "bytes=$(stat -c %s "$f") $(blocks <"$f" | ranges)"; rm -f "$f"
	;;
ctl)
	vbd
	e=$( { echo "$3" >"$V/incmig_control"; } 2>&1) && echo ok || echo "$e" | err
	;;
cat)
	vbd
	e=$( { cat "$V/incmig_bitmap" >/dev/null; } 2>&1) && echo ok || echo "$e" | err
	;;
stage)
	vbd
	if [ -n "${4:-}" ]; then src=$4; else src=/dev/zero; fi
	head -c "$3" "$src" | dd of="$V/incmig_bitmap_load" bs="$3" status=none 2>/tmp/stage.err && echo ok || err </tmp/stage.err
	;;
bits)
	# RANGES NBYTES: the bitmap with those blocks set
	printf '%b' "$(echo "$2" | tr ' ' '\n' | awk -v nb="$3" -F- '$1 != "" && $1 != "-" {
		e = ($2 == "") ? $1 : $2; for (k = $1; k <= e; k++) s[int(k / 8)] += 2 ^ (k % 8) }
		END { for (i = 0; i < nb; i++) printf "\\%03o", s[i] + 0 }')"
	;;
race)
	vbd
	first=$3 stride=$4 n=$5 d=$(mktemp -d)
	id=$($L send "$name" "loop $first $stride $n") || exit 1
	k=0
	while :; do
		acked=0; $L ack "$name" "$id" >/dev/null && acked=1
		k=$((k + 1)); snapread "$d/s$k" >/dev/null || { echo "snapshot $k failed"; exit 1; }
		[ $acked = 1 ] && break
		[ $k -lt 5000 ] || { echo "no ACK from the guest's loop"; exit 1; }
	done
	$L ack "$name" "$id"
	ne=0; for f in "$d"/s*; do [ -s "$f" ] && blocks <"$f" >"$f.b" && [ -s "$f.b" ] && ne=$((ne + 1)); done
	echo "snaps=$k nonempty=$ne twice=$(cat "$d"/*.b | sort -n | uniq -d | ranges)"
	echo "union $(cat "$d"/*.b | ranges)"
	rm -rf "$d"
	;;
racefull)
	vbd
	bs=$(cat "$V/incmig_block_size") sectors=$(xenstore-read "$BE/sectors") || exit 1
	[ "$bs" -gt 0 ] || { echo "tracking is off"; exit 1; }
	d=$(mktemp -d)
	id=$($L send "$name" "$3") || exit 1
	k=0
	while :; do
		acked=0; $L ack "$name" "$id" >/dev/null && acked=1
		k=$((k + 1)); snapread "$d/s$k" >/dev/null || { echo "snapshot $k failed"; exit 1; }
		[ $acked = 1 ] && break
		[ $k -lt 5000 ] || { echo "no ACK from the guest"; exit 1; }
	done
	$L ack "$name" "$id"
	echo "snaps=$k"
	union $(( (sectors * 512 + bs - 1) / bs )) "$d"/s*
	rm -rf "$d"
	;;
marked)
	vbd
	cat "$V/statistics/incmig_marked"
	;;
*) sed -n '2,27p' "$0" | sed 's/^# \?//' >&2; exit 2 ;;
esac
