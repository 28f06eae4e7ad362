#!/bin/bash
# Runs inside the VM guest (tests/support/harness.py; chrooted into the host's read-only
# root): makes the guest a node of the host's control plane with containerd and kubelet,
# then keeps it up and serves the host's commands until told to stop.
#
# Settings (environment; tests/support/vm_node.py sets them):
#   NODE_NAME        the Node's name (kubelet --hostname-override)
#   NODE_KUBECONFIG  kubelet's kubeconfig (apiserver at https://10.0.2.2:6443; default
#                    $SHARE/node.kubeconfig); NODE_CA the CA that signed the apiserver's
#                    and its clients' certificates (default $SHARE/ca.crt)
#   NODE_KUBELET     the kubelet binary (scripts/build-apiserver.sh caches it)
#   NODE_IMAGES      directories (colon-separated) whose *.tar OCI archives are imported
#                    into containerd's k8s.io namespace before kubelet starts: the node's
#                    own (scripts/build-node-images.sh: the pause image) and any others
#                    (the project's and workload images); default $SHARE/images
#   NODE_LABELS      extra node labels (kubelet --node-labels)
#   NODE_SANDBOX     the sandbox image (default localhost/pause:3.2)
#   NODE_SNAPSHOTTER containerd's snapshotter: overlayfs (default: an image is unpacked
#                    once and its containers share it) or native (a full copy per
#                    container; needs no overlay module)
#   NODE_UP_S        stop after this many seconds up (0: at $SHARE/teardown or the deadline)
#   NODE_NUMA_BALANCING  kernel.numa_balancing on the node (default 0, which the harness
#                    sets from boot too: vm_node.NODE_CMDLINE; "keep": the kernel's
#                    own). Off, as on a node whose tiering the agent does: NUMA
#                    balancing moves a page toward the node of the CPU that touches it,
#                    so even mode 1 (not the tiering mode, 2) promotes hot pages from the
#                    CPU-less node 1 to node 0 by itself (a catalog pod's hot array, all
#                    on node 1 when it started, was all on node 0 three minutes later,
#                    with no tiering scheme applied)
#   NODE_DISK        a block device (/dev/vda: harness.VmConfig.disks) for containerd's root
#                    instead of tmpfs; made ext4 when blank. An archive already imported
#                    there (same path, size and time, listed in its .imported) is not
#                    imported again
#   NODE_PREPARE     1: only import the images onto NODE_DISK, then stop (no kubelet):
#                    the host keeps that disk as the base of later nodes' disks
#
# Into the share: node-progress (one "STAGE UPTIME" line per stage reached, "failed: WHY"
# on failure), containerd.log, kubelet.log, and the answers of the command channel: the
# host drops exec/ID.sh (renamed into place whole), the guest runs it with bash and leaves
# exec/ID.out (stdout and stderr) and then exec/ID.rc. On $SHARE/teardown (or NODE_UP_S)
# kubelet and containerd stop and the script exits, which powers the guest off.
#
# The node: cgroup v2 (the guest's only hierarchy) with kubelet's cgroupfs driver (no
# systemd here) and containerd's runc shim set the same way; containerd's snapshots on
# tmpfs (overlayfs upper directories, or native copies); CNI bridge + host-local IPAM
# (10.88.0.0/16) + portmap + loopback from containernetworking-plugins; iptables (nft)
# through the guest kernel's modules. No kube-proxy: the one Service pods need, the
# apiserver's `kubernetes` (10.96.0.1:443), is forwarded to the host by a static DNAT
# rule, so in-cluster clients work.
set -uo pipefail

SHARE=${SHARE:-/tmp/share}
NODE_PREPARE=${NODE_PREPARE:-0}
if [ "$NODE_PREPARE" = 1 ]; then
    NODE_NAME=${NODE_NAME:-prepare} NODE_KUBELET=${NODE_KUBELET:-none}
fi
NODE_NAME=${NODE_NAME:?NODE_NAME is required}
NODE_KUBECONFIG=${NODE_KUBECONFIG:-$SHARE/node.kubeconfig}
NODE_CA=${NODE_CA:-$SHARE/ca.crt}
NODE_KUBELET=${NODE_KUBELET:?NODE_KUBELET is required}
NODE_DISK=${NODE_DISK:-}
NODE_IMAGES=${NODE_IMAGES:-$SHARE/images}
NODE_LABELS=${NODE_LABELS:-}
NODE_SANDBOX=${NODE_SANDBOX:-localhost/pause:3.2}
NODE_SNAPSHOTTER=${NODE_SNAPSHOTTER:-overlayfs}
NODE_UP_S=${NODE_UP_S:-0}
NODE_NUMA_BALANCING=${NODE_NUMA_BALANCING:-0}
NODE_IP=10.0.2.15
HOST_IP=10.0.2.2
POD_SUBNET=10.88.0.0/16
SERVICE_IP=10.96.0.1
state=/run/damon-node
sock=/run/containerd/containerd.sock

uptime_s() { cut -d' ' -f1 /proc/uptime; }
stage() { echo "$1 $(uptime_s)" >>"$SHARE/node-progress"; echo "node: $1" >&2; }
fail() {
    echo "failed: $*" >>"$SHARE/node-progress"
    echo "node: failed: $*" >&2
    stop_node
    exit 1
}
arg() { sed -n "s/.*damonvm\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }

pids=()
stop_node() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null
    done
    pids=()
}
trap 'stop_node' EXIT
[ -e "$SHARE/teardown" ] && { echo "node: torn down before it started" >&2; exit 0; }

# --- writable places: the host root is read-only -----------------------------------------
# Mounts propagate as on a systemd node, where every mount is shared: a pod's hostPath
# with mountPropagation (the agent's /sys/fs/cgroup) is refused on a private one.
mount --make-rshared / || fail "mount --make-rshared /"
mkdir -p "$state"
for dir in /var/lib /var/log; do
    mount -t tmpfs -o mode=755 tmpfs "$dir" || fail "mount tmpfs on $dir"
done
cni_conf=/etc/cni/net.d
if [ -d /etc/cni ]; then
    mount -t tmpfs -o mode=755 tmpfs /etc/cni || fail "mount tmpfs on /etc/cni"
else
    # The host has no /etc/cni to mount over (scripts/system-deps.sh makes one).
    cni_conf=/run/cni/net.d
fi
mkdir -p "$cni_conf" /var/lib/kubelet/volumeplugins /var/lib/cni /var/log/pods /run/containerd
stage mounts

# --- kernel modules ------------------------------------------------------------------------
# The guest's modules are not under /lib/modules (that is the host's): modprobe is pointed
# at the kernel package's tree. The kernel's own requests (iptables' and nftables'
# matches and targets, asked for by name when a rule first uses them) go through a helper
# that does the same; it runs in the initramfs root, from which the host root is /host.
moddir=$(arg moddir)
[ -n "$moddir" ] || fail "no damonvm.moddir on the kernel command line"
modprobe_d() { /sbin/modprobe -d "$moddir" "$@"; }
cat >"$state/modprobe" <<EOF
#!/bin/sh
exec /bin/chroot /host /sbin/modprobe -d $moddir "\$@"
EOF
chmod 755 "$state/modprobe"
echo "/host$state/modprobe" >/proc/sys/kernel/modprobe
[ "$NODE_SNAPSHOTTER" = overlayfs ] && { modprobe_d overlay || fail "modprobe overlay"; }
for module in bridge br_netfilter veth nf_conntrack nf_nat nf_tables nft_compat nft_chain_nat \
    nft_masq xt_MASQUERADE xt_addrtype xt_comment xt_conntrack xt_mark xt_multiport \
    xt_nat xt_tcpudp; do
    modprobe_d "$module" || fail "modprobe $module"
done
sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
    net.bridge.bridge-nf-call-ip6tables=1 || fail "sysctl"
if [ "$NODE_NUMA_BALANCING" != keep ] && [ -e /proc/sys/kernel/numa_balancing ]; then
    echo "$NODE_NUMA_BALANCING" >/proc/sys/kernel/numa_balancing \
        || fail "kernel.numa_balancing=$NODE_NUMA_BALANCING"
fi
iptables -w -L -n >/dev/null || fail "iptables does not work: $(iptables -L -n 2>&1 | tail -n 2)"
# kube-proxy's one rule that matters here: the apiserver's Service address leads to the host.
for chain in PREROUTING OUTPUT; do
    iptables -w -t nat -A "$chain" -d "$SERVICE_IP/32" -p tcp --dport 443 \
        -m comment --comment "damon-node: kubernetes service" \
        -j DNAT --to-destination "$HOST_IP:6443" || fail "DNAT for the kubernetes service"
done
stage modules

# --- containerd's root: tmpfs (under /var/lib), or a disk of its own -------------------------
if [ -n "$NODE_DISK" ]; then
    modprobe_d virtio_blk || fail "modprobe virtio_blk"
    for _ in $(seq 1 50); do [ -b "$NODE_DISK" ] && break; sleep 0.2; done
    [ -b "$NODE_DISK" ] || fail "no block device $NODE_DISK"
    if ! blkid "$NODE_DISK" >/dev/null 2>&1; then
        mkfs.ext4 -q -L damon-node -E lazy_itable_init=1,lazy_journal_init=1 "$NODE_DISK" \
            || fail "mkfs.ext4 $NODE_DISK"
    fi
    mkdir -p /var/lib/containerd
    mount -o noatime "$NODE_DISK" /var/lib/containerd || fail "mount $NODE_DISK"
    stage disk
fi

# --- containerd ----------------------------------------------------------------------------
cat >"$state/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "$sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODE_SANDBOX"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$NODE_SNAPSHOTTER"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni_conf"
EOF
cat >"$cni_conf/10-damon-node.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "damon-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
containerd --config "$state/containerd.toml" >"$SHARE/containerd.log" 2>&1 </dev/null &
pids+=($!)
for _ in $(seq 1 300); do
    [ -S "$sock" ] && ctr -a "$sock" version >/dev/null 2>&1 && break
    [ -d "/proc/${pids[0]}" ] || fail "containerd exited: $(tail -n 5 "$SHARE/containerd.log")"
    sleep 0.2
done
[ -S "$sock" ] || fail "containerd did not open $sock in 60 s"
stage containerd

# --- images: every OCI archive of the given directories -----------------------------------
IFS=: read -r -a image_dirs <<<"$NODE_IMAGES"
for dir in "${image_dirs[@]}"; do
    [ -d "$dir" ] || continue
    for archive in "$dir"/*.tar; do
        [ -f "$archive" ] || continue
        seen=$(stat -L -c '%n %s %Y' "$archive")
        grep -qxF "$seen" /var/lib/containerd/.imported 2>/dev/null && continue
        ctr -a "$sock" -n k8s.io images import --snapshotter "$NODE_SNAPSHOTTER" "$archive" >&2 \
            || fail "ctr images import $archive"
        echo "$seen" >>/var/lib/containerd/.imported
    done
done
ctr -a "$sock" -n k8s.io images ls -q >"$SHARE/node-images.txt"
grep -qx "$NODE_SANDBOX" "$SHARE/node-images.txt" \
    || fail "the sandbox image $NODE_SANDBOX is not among the imported images (NODE_IMAGES=$NODE_IMAGES)"
stage images
if [ "$NODE_PREPARE" = 1 ]; then
    stop_node
    sync
    umount /var/lib/containerd || fail "umount /var/lib/containerd"
    stage prepared
    exit 0
fi

# --- kubelet -------------------------------------------------------------------------------
[ -x "$NODE_KUBELET" ] || fail "no kubelet at $NODE_KUBELET (scripts/build-apiserver.sh builds it)"
[ -s "$NODE_KUBECONFIG" ] || fail "no kubeconfig at $NODE_KUBECONFIG"
cp "$NODE_KUBECONFIG" "$state/kubeconfig"
cp "$NODE_CA" "$state/ca.crt" || fail "no CA certificate at $NODE_CA"
cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/ca.crt}
authorization:
  mode: Webhook
# tmpfs holds the node's files and the images: keep eviction for real memory pressure.
evictionHard:
  memory.available: 64Mi
  nodefs.available: 5%
  imagefs.available: 5%
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
# Under emulation everything is several times slower than on hardware.
runtimeRequestTimeout: 4m
resolvConf: /etc/resolv.conf
EOF
labels="damon.io/vm-node=true${NODE_LABELS:+,$NODE_LABELS}"
"$NODE_KUBELET" --config="$state/kubelet.yaml" --kubeconfig="$state/kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$sock" \
    --node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --node-labels="$labels" \
    --root-dir=/var/lib/kubelet --cert-dir=/var/lib/kubelet/pki \
    --volume-plugin-dir=/var/lib/kubelet/volumeplugins \
    >"$SHARE/kubelet.log" 2>&1 </dev/null &
pids+=($!)
stage kubelet

# --- up: serve the host's commands until told to stop --------------------------------------
mkdir -p "$SHARE/exec"
started=$(date +%s)
while :; do
    [ -e "$SHARE/teardown" ] && break
    if [ "$NODE_UP_S" != 0 ] && [ $(( $(date +%s) - started )) -ge "$NODE_UP_S" ]; then break; fi
    for pid in "${pids[@]}"; do
        [ -d "/proc/$pid" ] || fail "a node process exited (pid $pid); see containerd.log, kubelet.log"
    done
    for request in "$SHARE"/exec/*.sh; do
        [ -f "$request" ] || continue
        id=${request%.sh}
        [ -e "$id.out" ] && continue
        bash "$request" >"$id.out" 2>&1 </dev/null
        echo $? >"$id.rc.tmp" && mv "$id.rc.tmp" "$id.rc"
    done
    sleep 0.5
done
stage stopping
stop_node
stage stopped
