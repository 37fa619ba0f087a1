# tests/lab/lib.sh: shared helpers of the nested Xen lab, sourced by lab.sh
# and by every step script.  Defines the cache layout, logging, the
# stamp-file cache, the private apt configuration and ssh options.
#
# Cache layout under $LAB (INCMIG_LAB_DIR, default /var/tmp/incmig-lab):
#   stamps/<step>   hash of the step's inputs, written only on success
#   out/            finished artefacts (xen, vmlinux, dom0 initrd, base.raw,
#                   guest initrd, ssh key)
#   work/           scratch of the build steps (xen source, rootfs tree)
#   run/            per-boot state (pids, fifos, overlays, shared disk)
#   logs/           build and boot logs (hostN.serial = Xen + dom0 console)

LAB=${INCMIG_LAB_DIR:-/var/tmp/incmig-lab}
LABSRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NICE=${INCMIG_LAB_NICE:-nice -n 15}
PORTBASE=${INCMIG_LAB_PORT:-10220}      # host N: ssh on 127.0.0.1:PORTBASE+N
LINKPORT=$((PORTBASE + 10))             # socket netdev between host 1 and 2
mkdir -p "$LAB"/{stamps,out,work,run,logs}

log()  { printf '[lab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { log "ERROR: $*"; exit 1; }

# The machine's own Debian mirror, as apt is configured here (deb822 file,
# first URIs line of a Types: deb stanza); fallback: a one-line sources.list.
mirror() {
	local m
	m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
	[ -n "$m" ] || m=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
	[ -n "$m" ] || die "cannot find the Debian mirror in /etc/apt"
	echo "$m"
}

# apt-get with a private source list (deb + deb-src of the same mirror) and
# private state under $LAB/work/apt: /etc/apt is never changed.
aptsrc() {
	local d=$LAB/work/apt
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
	printf 'deb %s bookworm main\ndeb-src %s bookworm main\n' "$(mirror)" "$(mirror)" >"$d/sources.list"
	apt-get -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache" "$@"
}

# Host packages the lab needs; installed with apt-get when missing.
HOST_PKGS="qemu-system-x86 qemu-utils debootstrap busybox-static cpio dpkg-dev
build-essential bison flex python3 xz-utils e2fsprogs openssh-client bc"
host_deps() {
	local p missing=
	for p in $HOST_PKGS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	log "installing host packages:$missing"
	apt-get update -q >/dev/null || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=900 \
		--no-install-recommends $missing >"$LAB/logs/host-deps.log" 2>&1 \
		|| die "apt-get install failed, see $LAB/logs/host-deps.log"
}

# step NAME SCRIPT INPUT...: run SCRIPT unless stamps/NAME holds the hash of
# (SCRIPT, lib.sh, every INPUT file or string).  The stamp is written only
# when the script succeeds; a failed step leaves none and runs again.
step() {
	local name=$1 script=$2 h t0 rc; shift 2
	h=$( { cat "$LABSRC/$script" "$LABSRC/lib.sh"
	       for i in "$@"; do if [ -f "$i" ]; then cat "$i"; else echo "$i"; fi; done
	     } | sha256sum | cut -c1-16)
	if [ "$(cat "$LAB/stamps/$name" 2>/dev/null)" = "$h" ] && [ -z "${INCMIG_LAB_FORCE:-}" ]; then
		log "$name: up to date ($h)"
		return 0
	fi
	rm -f "$LAB/stamps/$name"
	log "$name: building (log: $LAB/logs/build-$name.log)"
	t0=$(date +%s)
	$NICE bash "$LABSRC/$script" >"$LAB/logs/build-$name.log" 2>&1
	rc=$?
	if [ $rc -ne 0 ]; then
		tail -20 "$LAB/logs/build-$name.log" >&2
		die "$name failed (rc=$rc) after $(( $(date +%s) - t0 ))s, see $LAB/logs/build-$name.log"
	fi
	echo "$h" >"$LAB/stamps/$name"
	log "$name: done in $(( $(date +%s) - t0 ))s"
}

SSHOPTS="-q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5"
# hssh N CMD...: run CMD in dom0 of host N
hssh() { local n=$1; shift; ssh $SSHOPTS -i "$LAB/out/id_ed25519" -p $((PORTBASE + n)) root@127.0.0.1 "$@"; }
