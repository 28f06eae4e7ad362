#!/usr/bin/env bash
# Prepare everything the VM tests and benchmarks boot (tests/vm/harness.py):
#   - the apt packages QEMU, busybox-static, cpio and kmod (depmod);
#   - the newest Debian 6.12 cloud kernel (DAMON vaddr+paddr+sysfs, soft-dirty, PSI,
#     virtio-fs built in, zram as a module), its vmlinuz and a depmod'ed module tree;
#   - a busybox initramfs whose /init is written below.
# Everything lands under ${DAMON_K8S_CACHE:-~/.cache/damon-k8s}/vm/ and is reused when
# present, so a second run does nothing. The file vm/current names the kernel release the
# harness boots; it is written last, so its presence means the assets are complete.
set -euo pipefail

cache=${DAMON_K8S_CACHE:-$HOME/.cache/damon-k8s}
vm="$cache/vm"
mkdir -p "$vm"
log() { echo "vm-assets: $*" >&2; }

# The dpkg lock may be held by another apt run (a teammate, unattended upgrades): apt
# waits for it rather than failing.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }

packages=(qemu-system-x86 busybox-static cpio kmod)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_get update -q
    DEBIAN_FRONTEND=noninteractive apt_get install -y -q "${missing[@]}"
fi

newest_cloud_kernel() {
    # Empty output (not a failure) when the apt lists know no such package yet.
    apt-cache pkgnames linux-image-6.12. 2>/dev/null \
        | grep -E '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64$' | sort -V | tail -n 1 || true
}

# The initramfs is rebuilt whenever this script changes (its /init is written below).
script_sum=$(sha256sum "$0" | cut -d' ' -f1)
if [ -s "$vm/current" ] && [ -f "$vm/kernel/$(cat "$vm/current")/vmlinuz" ] \
    && [ -f "$vm/initramfs.cpio.gz" ] && [ "$(cat "$vm/initramfs.sum" 2>/dev/null)" = "$script_sum" ]; then
    log "cached: kernel $(cat "$vm/current") in $vm"
    exit 0
fi

pkg=$(newest_cloud_kernel)
if [ -z "$pkg" ]; then
    apt_get update -q
    pkg=$(newest_cloud_kernel)
fi
if [ -z "$pkg" ]; then
    log "no linux-image-6.12.*-cloud-amd64 package in the apt sources"
    exit 1
fi
release=${pkg#linux-image-}
kdir="$vm/kernel/$release"
if [ ! -f "$kdir/vmlinuz" ]; then
    log "fetching $pkg"
    work=$(mktemp -d "$vm/download.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -q "$pkg")
    dpkg-deb -x "$work"/*.deb "$work/root"
    mkdir -p "$vm/modules/lib/modules"
    rm -rf "$vm/modules/lib/modules/$release"
    cp -a "$work/root/lib/modules/$release" "$vm/modules/lib/modules/$release"
    depmod -b "$vm/modules" "$release"
    mkdir -p "$kdir"
    cp "$work/root/boot/vmlinuz-$release" "$kdir/vmlinuz.part"
    mv "$kdir/vmlinuz.part" "$kdir/vmlinuz"
    rm -rf "$work"
    trap - EXIT
fi

# The initramfs: busybox plus an /init that mounts the host root (read-only) and the
# writable share, starts zram swap, runs the harness's guest script chrooted into the
# host root with a deadline, and powers the guest off whatever happens.
log "building the initramfs"
ird=$(mktemp -d "$vm/initramfs.XXXXXX")
trap 'rm -rf "$ird"' EXIT
mkdir -p "$ird"/{bin,sbin,proc,sys,dev,host,share,keep}
cp /bin/busybox "$ird/bin/busybox"
for applet in sh mount umount mkdir cat echo sleep timeout ln ls chroot modprobe mknod \
    poweroff sync mkswap swapon ip grep sed tr date kill rm cp; do
    ln -s busybox "$ird/bin/$applet"
done
cat > "$ird/init" <<'INIT'
#!/bin/sh
# Guest PID 1. Settings come from the kernel command line (damonvm.*) and the share.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
off() { sync; echo o > /proc/sysrq-trigger; sleep 30; }
trap off EXIT
arg() { sed -n "s/.*damonvm\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
deadline=$(arg deadline); deadline=${deadline:-300}
kver=$(uname -r)
echo "damonvm: init $(cat /proc/uptime)"
mount -t virtiofs hostroot /host -o ro || { echo "damonvm: no hostroot"; off; }
mount -t virtiofs share /share || { echo "damonvm: no share"; off; }
# Host paths under /tmp (the repository of a fresh clone, say) stay visible above the
# guest's own tmpfs: bind them through /keep before the tmpfs hides them.
mount --bind /host/tmp /keep
mount -t tmpfs -o mode=1777 tmpfs /host/tmp
for p in $(cat /share/keep-tmp-paths 2>/dev/null); do
    mkdir -p "/host$p" && mount --bind "/keep${p#/tmp}" "/host$p"
done
mkdir -p /host/tmp/share && mount --bind /share /host/tmp/share
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/shm 2>/dev/null; mount -t tmpfs tmpfs /host/dev/shm 2>/dev/null
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
mount -t tracefs tracefs /host/sys/kernel/tracing 2>/dev/null
moddir=$(arg moddir)
zram=$(arg zram); zram=${zram:-0}
if [ -n "$moddir" ] && [ "$zram" != 0 ]; then
    chroot /host /sbin/modprobe -d "$moddir" -S "$kver" zram num_devices=1 \
        && echo "$zram" > /sys/block/zram0/disksize \
        && mkswap /dev/zram0 >/dev/null && swapon /dev/zram0 \
        || echo "damonvm: zram swap failed"
fi
# Networking to the host (QEMU user networking: the host is 10.0.2.2).
if [ -n "$moddir" ] && [ "$(arg net)" = 1 ]; then
    chroot /host /sbin/modprobe -d "$moddir" -S "$kver" virtio_net \
        && ip link set lo up && ip link set eth0 up \
        && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
        || echo "damonvm: network setup failed"
fi
echo "damonvm: run $(cat /proc/uptime)"
timeout "$deadline" chroot /host /bin/sh -c \
    'cd /tmp/share && exec /bin/sh /tmp/share/guest.sh' \
    > /share/stdout 2> /share/stderr < /dev/null
echo $? > /share/rc
echo "damonvm: done rc=$(cat /share/rc) $(cat /proc/uptime)"
off
INIT
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1 > "$vm/initramfs.cpio.gz.part")
mv "$vm/initramfs.cpio.gz.part" "$vm/initramfs.cpio.gz"
echo "$script_sum" > "$vm/initramfs.sum"
rm -rf "$ird"
trap - EXIT
echo "$release" > "$vm/current.part"
mv "$vm/current.part" "$vm/current"
log "ready: kernel $release, modules in $vm/modules, initramfs $vm/initramfs.cpio.gz"
