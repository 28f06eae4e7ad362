#!/usr/bin/env bash
# Prepare everything the VM tests and benchmarks boot (tests/support/harness.py):
#   - the apt packages QEMU, busybox-static, cpio and kmod (depmod);
#   - the kernel matrix, each kernel's vmlinuz and a depmod'ed module tree, fetched from
#     Debian by package name (docs/testbed.md says what each one is for):
#       6.1   Debian 12's stock cloud kernel: no DAMON at all (the userspace backend's node)
#       6.12  Debian 12's newer cloud kernel: DAMON vaddr+paddr+sysfs, reject-only filters
#       6.18  trixie-backports: allow filters, DAMON_STAT on at boot
#       7.3   trixie-backports, the newest 7.x whose binary and modules are both there
#   - a busybox initramfs whose /init is written below.
# Everything lands under ${DAMON_K8S_CACHE:-~/.cache/damon-k8s}/vm/ and is reused when
# present, so a second run does nothing. vm/series/<series> names the release of each
# kernel of the matrix; vm/current names the default (6.12). Each is written last, so its
# presence means that kernel's assets are complete.
# DAMON_K8S_VM_KERNELS (space-separated series) narrows the matrix that is fetched.
set -euo pipefail

cache=${DAMON_K8S_CACHE:-$HOME/.cache/damon-k8s}
vm="$cache/vm"
mkdir -p "$vm/series"
log() { echo "vm-assets: $*" >&2; }
matrix=(${DAMON_K8S_VM_KERNELS:-6.1 6.12 6.18 7.3})
default_series=6.12

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

# trixie-backports through a private apt configuration under the cache: the machine's
# own sources stay as they are. The mirror is the one the machine already uses.
backports="$cache/apt-trixie-backports"
backports_apt() {
    apt-get -o Dir::Etc::SourceList="$backports/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$backports/lists" -o Dir::Cache="$backports/cache" "$@"
}
backports_cache() {
    apt-cache -o Dir::Etc::SourceList="$backports/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$backports/lists" -o Dir::Cache="$backports/cache" "$@"
}
backports_ready=0
prepare_backports() {
    [ "$backports_ready" = 1 ] && return 0
    mkdir -p "$backports/lists/partial" "$backports/cache/archives/partial"
    local mirror
    mirror=$(grep -rhoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -v security | head -n 1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} trixie-backports main" \
        > "$backports/sources.list"
    backports_apt update -q >&2
    backports_ready=1
}

# The package names (space-separated) that carry kernel SERIES, newest release first
# in the list's order; empty when the indexes know none.
packages_for() {
    local series=$1 v
    case "$series" in
        6.1)
            apt-cache pkgnames linux-image-6.1.0- 2>/dev/null \
                | grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' | sort -V | tail -n 1 || true ;;
        6.12)
            apt-cache pkgnames linux-image-6.12. 2>/dev/null \
                | grep -E '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64$' | sort -V | tail -n 1 || true ;;
        6.*)
            backports_cache pkgnames "linux-image-$series." 2>/dev/null \
                | grep -E "^linux-image-${series//./\\.}\.[0-9]+\+deb[0-9]+-cloud-amd64\$" \
                | sort -V | tail -n 1 || true ;;
        7.*)
            # From 7.x a kernel comes split: linux-binary (vmlinuz) and linux-modules.
            # Take the newest release whose two halves are both in the index.
            for v in $(backports_cache pkgnames "linux-binary-$series." 2>/dev/null \
                    | sed -n "s/^linux-binary-\(${series//./\\.}\.[0-9]*+deb[0-9]*-cloud-amd64\)\$/\1/p" \
                    | sort -rV); do
                if backports_cache show "linux-modules-$v" >/dev/null 2>&1; then
                    echo "linux-binary-$v linux-modules-$v"; return 0
                fi
            done ;;
    esac
}

fetch_kernel() {
    local series=$1 pkgs release kdir work deb
    if [ -s "$vm/series/$series" ] && [ -f "$vm/kernel/$(cat "$vm/series/$series")/vmlinuz" ]; then
        log "cached: kernel $series = $(cat "$vm/series/$series")"
        return 0
    fi
    case "$series" in 6.1|6.12) ;; *) prepare_backports ;; esac
    pkgs=$(packages_for "$series")
    if [ -z "$pkgs" ] && [ "$series" = 6.1 -o "$series" = 6.12 ]; then
        apt_get update -q >&2
        pkgs=$(packages_for "$series")
    fi
    if [ -z "$pkgs" ]; then
        log "no Debian cloud kernel package for $series in the apt indexes"
        return 1
    fi
    release=${pkgs%% *}
    release=${release#linux-image-}
    release=${release#linux-binary-}
    log "fetching kernel $series: $pkgs"
    work=$(mktemp -d "$vm/download.XXXXXX")
    # shellcheck disable=SC2086  # the package list splits on purpose
    case "$series" in
        6.1|6.12) (cd "$work" && apt-get download -q $pkgs >&2) ;;
        *) (cd "$work" && backports_apt download -q $pkgs >&2) ;;
    esac
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    mkdir -p "$vm/modules/lib/modules"
    rm -rf "$vm/modules/lib/modules/$release"
    if [ -d "$work/root/usr/lib/modules/$release" ]; then
        cp -a "$work/root/usr/lib/modules/$release" "$vm/modules/lib/modules/$release"
    else
        cp -a "$work/root/lib/modules/$release" "$vm/modules/lib/modules/$release"
    fi
    depmod -b "$vm/modules" "$release"
    kdir="$vm/kernel/$release"
    mkdir -p "$kdir"
    if [ -f "$work/root/boot/vmlinuz-$release" ]; then
        cp "$work/root/boot/vmlinuz-$release" "$kdir/vmlinuz.part"
    else
        cp "$vm/modules/lib/modules/$release/vmlinuz" "$kdir/vmlinuz.part"
    fi
    mv "$kdir/vmlinuz.part" "$kdir/vmlinuz"
    rm -rf "$work"
    echo "$release" > "$vm/series/$series.part"
    mv "$vm/series/$series.part" "$vm/series/$series"
}

for series in "${matrix[@]}"; do
    fetch_kernel "$series"
done

# The initramfs is rebuilt whenever this script changes (its /init is written below).
script_sum=$(sha256sum "$0" | cut -d' ' -f1)
if [ -f "$vm/initramfs.cpio.gz" ] && [ "$(cat "$vm/initramfs.sum" 2>/dev/null)" = "$script_sum" ] \
    && [ -s "$vm/current" ]; then
    log "cached: initramfs; kernels $(cd "$vm/series" && grep -H . * | tr '\n' ' ')"
    exit 0
fi

# The initramfs: busybox plus an /init that mounts the host root (read-only) and the
# writable share, starts zram swap, runs the harness's guest script chrooted into the
# host root with a deadline, and powers the guest off whatever happens.
log "building the initramfs"
ird=$(mktemp -d "$vm/initramfs.XXXXXX")
trap 'rm -rf "$ird"' EXIT
mkdir -p "$ird"/{bin,sbin,proc,sys,dev,host,share,keep}
cp /bin/busybox "$ird/bin/busybox"
# Kernels that build virtio-fs as a module (6.1) get the modules /init needs to reach the
# host root before it can load anything from there: virtio_pci and virtiofs with their
# dependencies, in load order (dependencies first, as modules.dep lists them reversed).
for series_file in "$vm"/series/*; do
    release=$(cat "$series_file")
    tree="$vm/modules/lib/modules/$release"
    grep -q '^kernel/fs/fuse/virtiofs.ko:' "$tree/modules.dep" || continue  # built in
    mkdir -p "$ird/early/$release"
    : > "$ird/early/$release/order"
    for wanted in kernel/drivers/virtio/virtio_pci.ko kernel/fs/fuse/virtiofs.ko; do
        deps=$(sed -n "s|^$wanted: *||p" "$tree/modules.dep")
        for module in $(echo "$deps" | tr ' ' '\n' | tac) "$wanted"; do
            [ -n "$module" ] || continue
            name=$(basename "$module")
            grep -qx "$name" "$ird/early/$release/order" && continue
            cp "$tree/$module" "$ird/early/$release/$name"
            echo "$name" >> "$ird/early/$release/order"
        done
    done
done
for applet in sh mount umount mkdir cat echo sleep timeout ln ls chroot modprobe insmod mknod \
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
if [ -f "/early/$kver/order" ]; then
    for m in $(cat "/early/$kver/order"); do insmod "/early/$kver/$m" 2>/dev/null; done
fi
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
# /run is writable on a real node (locks, the agent's state directory, containerd).
mount -t tmpfs -o mode=755 tmpfs /host/run
mkdir -p /host/run/lock
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup
mount -t tracefs tracefs /host/sys/kernel/tracing 2>/dev/null
# Multi-threaded TCG rarely races the kernel's run-time text patching: a vCPU runs a stale
# int3 and the kernel dies ("Oops: int3"). Two keys seen in such oopses flip here, while
# nothing else runs, instead of under load later. The first child memory cgroup turns
# memcg_kmem_online_key on for good (kubelet's, in kmem_cache_alloc). DAMON's events,
# enabled in a parked instance that records nothing, keep their tracepoints on, so that
# the agent's enabling and disabling of its own instances' events patches no code (in
# kdamond_fn).
cg=/host/sys/fs/cgroup
if echo +memory > $cg/cgroup.subtree_control 2>/dev/null; then
    mkdir $cg/damonvm-keys && rmdir $cg/damonvm-keys
    echo -memory > $cg/cgroup.subtree_control
fi
t=/host/sys/kernel/tracing
if [ -d $t/events/damon ] && mkdir $t/instances/damonvm-keys 2>/dev/null; then
    echo 0 > $t/instances/damonvm-keys/tracing_on
    echo 1 > $t/instances/damonvm-keys/events/damon/enable
fi
moddir=$(arg moddir)
zram=$(arg zram); zram=${zram:-0}
if [ -n "$moddir" ] && [ "$zram" != 0 ]; then
    # zram's default compressor is a crypto module the kernel would ask modprobe for by
    # name, which the guest cannot answer (its modules are not in /lib/modules): load it
    # first where it is a module (6.1), quietly where it is built in.
    chroot /host /sbin/modprobe -q -d "$moddir" -S "$kver" lzo-rle 2>/dev/null
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
cp "$vm/series/$default_series" "$vm/current.part" 2>/dev/null \
    || cp "$vm/series/${matrix[0]}" "$vm/current.part"
mv "$vm/current.part" "$vm/current"
log "ready: kernels $(cd "$vm/series" && grep -H . * | tr '\n' ' ')(default $(cat "$vm/current")), initramfs $vm/initramfs.cpio.gz"
