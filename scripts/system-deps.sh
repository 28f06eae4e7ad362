#!/usr/bin/env bash
# Install and prepare everything the real tests need on a fresh Debian 12 machine:
# apt packages, the kube-apiserver build and the VM's kernel. Slow builds are cached
# under ${DAMON_K8S_CACHE:-~/.cache/damon-k8s} so later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAMON_K8S_CACHE=${DAMON_K8S_CACHE:-$HOME/.cache/damon-k8s}
mkdir -p "$DAMON_K8S_CACHE"

packages=(etcd-server golang-go rsync golang-github-modern-go-reflect2-dev qemu-system-x86
          busybox-static cpio kmod dpkg-dev openssl buildah runc mmdebstrap)
# The VM guest as a kubelet node (scripts/node/guest.sh runs them from this root): the
# container runtime, CNI plugins, iptables (nft) and conntrack; gcc and static libc build
# the sandbox image's pause (scripts/build-node-images.sh); qemu-img the image disks.
packages+=(containerd containernetworking-plugins iptables conntrack socat gcc libc6-dev qemu-utils)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# kubectl: the tests call /usr/bin/kubectl. Machines of this kind ship one (1.32); where
# none is, Debian's kubernetes-client (1.20) matches the test apiserver.
[ -x /usr/bin/kubectl ] || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
    echo "system-deps: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# The guest mounts its own tmpfs over /etc/cni (the root it sees is this one, read-only).
mkdir -p /etc/cni/net.d

# Each of these is idempotent and caches its result.
for step in scripts/build-apiserver.sh scripts/vm-assets.sh scripts/build-images.sh \
    scripts/build-node-images.sh; do
    if [ -x "$step" ]; then "$step"; fi
done
