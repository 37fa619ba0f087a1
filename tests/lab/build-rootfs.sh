#!/bin/bash
# build-rootfs.sh: the dom0 root filesystem, a bookworm minbase with the Debian
# kernel, Xen's tools (xen-utils-4.17), ssh, lvm2 (LV disks), dkms with the
# kernel headers, gcc and linux-source-6.1 (xen-blkback-incmig-dkms builds
# in dom0, which has no network: apt install of incmig's .debs there needs
# every dependency already installed; the .debs' Depends are all here,
# 2026-12-01), and the lab's configuration:
# autologin on hvc0, static addresses by MAC, the throwaway ssh key, a
# readiness marker on the console and xenconsoled logging guest consoles with
# timestamps.  Everything from the machine's own Debian mirror.
# Output: $LAB/work/rootfs (tree), $LAB/out/vmlinux (uncompressed dom0 kernel:
# Xen's xz decompression is very slow under TCG), $LAB/out/initrd.img,
# $LAB/out/kversion.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
R=$LAB/work/rootfs
umount "$R/proc" 2>/dev/null || true
mountpoint -q "$R/proc" && { echo "$R/proc still mounted: not removing $R"; exit 1; }
rm -rf "$R"; mkdir -p "$LAB/work/debs"
debootstrap --variant=minbase --cache-dir="$LAB/work/debs" \
	--include=systemd-sysv,udev,kmod,iproute2,procps,openssh-server,openssh-client,busybox,e2fsprogs,util-linux,bc \
	bookworm "$R" "$(mirror)"
cp /etc/apt/sources.list.d/debian.sources "$R/etc/apt/sources.list.d/" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
mount -t proc proc "$R/proc"
trap 'umount "$R/proc" 2>/dev/null || true' EXIT
chroot "$R" apt-get update -q
chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	linux-image-amd64 initramfs-tools xen-utils-4.17 libaio1 libnbd0 zlib1g libgnutls30 libxxhash0 libzstd1 \
	lvm2 dkms linux-headers-amd64 make gcc linux-source-6.1
chroot "$R" apt-get clean
rm -rf "$R"/var/lib/apt/lists/* "$R/usr/sbin/policy-rc.d"
umount "$R/proc"; trap - EXIT

K=$(ls "$R/lib/modules" | sort -V | tail -1)
echo "$K" >"$LAB/out/kversion"

echo xenhost >"$R/etc/hostname"
printf '127.0.0.1 localhost\n192.168.77.1 xen1\n192.168.77.2 xen2\n' >"$R/etc/hosts"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$R/etc/fstab"
chroot "$R" passwd -d root
mkdir -p "$R/etc/systemd/system/serial-getty@hvc0.service.d"
cat >"$R/etc/systemd/system/serial-getty@hvc0.service.d/autologin.conf" <<'E2'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,38400,9600 %I $TERM
E2
# networking: systemd-networkd, matched by the MACs lab boot.sh gives QEMU
chroot "$R" systemctl enable systemd-networkd.service
mkdir -p "$R/etc/systemd/network"
printf '[Match]\nMACAddress=52:54:00:12:00:01 52:54:00:12:00:02\n[Network]\nAddress=10.0.2.15/24\n' \
	>"$R/etc/systemd/network/10-user.network"
for n in 1 2; do
	printf '[Match]\nMACAddress=52:54:00:77:00:0%s\n[Network]\nAddress=192.168.77.%s/24\n' $n $n \
		>"$R/etc/systemd/network/2$n-link.network"
done
# ssh: the lab's throwaway key, both ways (dom0 <-> dom0 for xl migrate)
mkdir -p "$R/root/.ssh"; chmod 700 "$R/root/.ssh"
cp "$LAB/out/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
cp "$LAB/out/id_ed25519" "$LAB/out/id_ed25519.pub" "$R/root/.ssh/"
printf 'Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n' >"$R/root/.ssh/config"
chmod 600 "$R"/root/.ssh/*
sed -i 's/^#\?UseDNS.*/UseDNS no/' "$R/etc/ssh/sshd_config"
# guest consoles logged by xenconsoled (Debian's /etc/init.d/xen reads
# XENCONSOLED_ARGS), then a readiness marker on the Xen console for lab.sh wait
mkdir -p "$R/var/log/xen/console"
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console --timestamp=guest"' >>"$R/etc/default/xen"
cat >"$R/usr/local/sbin/lab-ready" <<'E2'
#!/bin/sh
for i in $(seq 1 120); do xl list >/dev/null 2>&1 && pgrep -x xenconsoled >/dev/null && break; sleep 0.5; done
msg="LAB-DOM0-READY uptime=$(cut -d' ' -f1 /proc/uptime) xl_list_rc=$(xl list >/dev/null 2>&1; echo $?)"
echo "$msg" >/dev/hvc0; echo "$msg" >/dev/kmsg
E2
chmod +x "$R/usr/local/sbin/lab-ready"
cat >"$R/etc/systemd/system/lab-ready.service" <<'E2'
[Unit]
Description=incmig lab readiness marker
After=multi-user.target ssh.service xen.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lab-ready
[Install]
WantedBy=multi-user.target
E2
chroot "$R" systemctl enable lab-ready.service
for t in apt-daily-upgrade.timer apt-daily.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer e2scrub_reap.service systemd-networkd-wait-online.service; do
	chroot "$R" systemctl disable $t 2>/dev/null || true
done
mkdir -p "$R/root/lab"

python3 "$LABSRC/extract-vmlinux.py" "$R/boot/vmlinuz-$K" "$LAB/out/vmlinux.tmp"
mv "$LAB/out/vmlinux.tmp" "$LAB/out/vmlinux"
cp "$R/boot/initrd.img-$K" "$LAB/out/initrd.img"
du -sh "$R"
