#!/bin/bash
# boot.sh N [--two]: boot Xen host N (1 or 2) in QEMU (TCG: /dev/kvm here is
# kvm-pvm, which cannot run Xen) through QEMU's multiboot loader.
#   disk 1 (vda in dom0): qcow2 overlay on out/base.raw, new at every boot
#   disk 2 (vdb in dom0): run/shared.raw, the test guests' disk; the same file
#          on both hosts (cache=none, share-rw): the shared-storage case
#   NIC 1: user-mode, restrict=on (no way out), ssh from 127.0.0.1:PORTBASE+N
#   NIC 2 (--two): socket netdev on 127.0.0.1:LINKPORT between host 1
#          (listens) and host 2 (connects): 192.168.77.N in dom0
# Env: INCMIG_LAB_MEM (MiB per QEMU, 2048), INCMIG_LAB_DOM0MEM (1024M),
#      INCMIG_LAB_XENARGS, INCMIG_LAB_DOM0ARGS (appended).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
n=${1:?usage: boot.sh N [--two]}; two=${2:-}
case $n in 1|2) ;; *) die "host number must be 1 or 2" ;; esac
for f in xen vmlinux initrd.img base.raw; do [ -f "$LAB/out/$f" ] || die "missing $LAB/out/$f: run lab.sh build"; done
R=$LAB/run
if [ -f "$R/host$n.pid" ] && kill -0 "$(cat "$R/host$n.pid")" 2>/dev/null; then
	die "host $n already running (pid $(cat "$R/host$n.pid")); lab.sh stop $n"
fi
rm -f "$R/host$n".* 
qemu-img create -q -f qcow2 -b "$LAB/out/base.raw" -F raw "$R/host$n.qcow2"
[ -f "$R/shared.raw" ] || truncate -s 64M "$R/shared.raw"
MEM=${INCMIG_LAB_MEM:-2048}; DOM0MEM=${INCMIG_LAB_DOM0MEM:-1024M}
# smap/smep off and spec-ctrl=eager-fpu: needed under TCG (with spec-ctrl=no
# guests' data got corrupted); bootscrub off: scrubbing is slow emulated.
XENARGS="console=com1 com1=115200,8n1 dom0_mem=$DOM0MEM,max:$DOM0MEM dom0_max_vcpus=2 loglvl=all guest_loglvl=all noreboot smap=0 smep=0 spec-ctrl=eager-fpu bootscrub=false ${INCMIG_LAB_XENARGS:-}"
DOM0ARGS="console=hvc0 earlyprintk=xen root=/dev/vda rw systemd.hostname=xen$n ${INCMIG_LAB_DOM0ARGS:-}"
LINK=()
if [ "$two" = --two ]; then
	if [ "$n" = 1 ]; then LINK=(-netdev "socket,id=lk,listen=127.0.0.1:$LINKPORT")
	else LINK=(-netdev "socket,id=lk,connect=127.0.0.1:$LINKPORT"); fi
	LINK+=(-device "virtio-net-pci,netdev=lk,mac=52:54:00:77:00:0$n")
fi
date +%s.%N >"$R/host$n.t0"
$NICE qemu-system-x86_64 -name "incmig-lab-host$n" -accel tcg,thread=multi -cpu max -smp 2 -m "$MEM" -machine pc \
	-kernel "$LAB/out/xen" -append "$XENARGS" \
	-initrd "$LAB/out/vmlinux $DOM0ARGS,$LAB/out/initrd.img" \
	-drive "file=$R/host$n.qcow2,if=none,id=root,format=qcow2,cache=unsafe" \
	-device virtio-blk-pci,drive=root,addr=0x4,serial=labroot \
	-drive "file=$R/shared.raw,if=none,id=shared,format=raw,cache=none,file.locking=off" \
	-device virtio-blk-pci,drive=shared,addr=0x5,serial=labshared,share-rw=on \
	-nic "user,restrict=on,model=virtio-net-pci,mac=52:54:00:12:00:0$n,hostfwd=tcp:127.0.0.1:$((PORTBASE + n))-:22" \
	"${LINK[@]}" -device virtio-rng-pci \
	-display none -vga none -serial "file:$LAB/logs/host$n.serial" \
	-monitor "unix:$R/host$n.mon,server,nowait" \
	-pidfile "$R/host$n.pid" -daemonize 2>"$LAB/logs/host$n.qemu.stderr" \
	|| die "qemu failed: $(cat "$LAB/logs/host$n.qemu.stderr")"
log "host $n: qemu pid $(cat "$R/host$n.pid"), console $LAB/logs/host$n.serial, ssh port $((PORTBASE + n))"
