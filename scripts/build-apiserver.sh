#!/usr/bin/env bash
# Build the Kubernetes binaries the tests run from Debian's `kubernetes` source package and
# cache them: kube-apiserver, kube-controller-manager and kube-scheduler (the control plane,
# scripts/controlplane.sh) and kubelet (the VM guest as a node, scripts/vm-node).
#
# Why from source: none of them is packaged for Debian 12 and the machine reaches only
# package registries. The orig tarball carries vendor/, so the build is offline. Its
# vendored modern-go/reflect2 1.0.1 crashes the servers under Go 1.19, so the Debian
# package's reflect2 (1.0.2) replaces it before building.
#
# Idempotent: each binary is cached as ${DAMON_K8S_CACHE}/<name>-<version>; when all are
# there this does nothing. One `make` builds the missing ones (one tree, one Go cache:
# about 9 minutes cold on 2 cores for the apiserver, 3-4 more per other binary).
# Prints the path of the cached kube-apiserver on its last line.
set -euo pipefail

cache=${DAMON_K8S_CACHE:-$HOME/.cache/damon-k8s}
version=${DAMON_APISERVER_VERSION:-1.20.2}
binary="$cache/kube-apiserver-$version"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

missing_binaries() {
    wanted=()
    for c in "${components[@]}"; do
        [ -x "$cache/$c-$version" ] || wanted+=("$c")
    done
    [ ${#wanted[@]} -gt 0 ]
}
missing_binaries || { echo "$binary"; exit 0; }
# One build at a time in the shared tree (two sessions' `make test`); the second finds the
# first's binaries once it gets the lock.
mkdir -p "$cache"
exec 8>"$cache/build.lock"
flock 8
missing_binaries || { echo "$binary"; exit 0; }

log() { echo "build-apiserver: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# deb-src for bookworm main, so `apt-get source` can find the package.
sources=/etc/apt/sources.list.d/damon-k8s-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    log "adding a deb-src entry for bookworm main ($sources)"
    as_root tee "$sources" >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    need_update=1
fi

packages=(golang-go rsync golang-github-modern-go-reflect2-dev etcd-server dpkg-dev make)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${need_update:-0}" = 1 ] || [ ${#missing[@]} -gt 0 ]; then
    log "apt-get update"
    as_root apt-get update -q >&2
fi
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi

work="$cache/build"
mkdir -p "$work"
cd "$work"
src=$(find . -maxdepth 1 -type d -name "kubernetes-*" | head -n 1)
if [ -z "$src" ]; then
    log "fetching the kubernetes source package into $work"
    apt-get source --download-only "kubernetes=$version*" >&2 2>/dev/null \
        || apt-get source --download-only kubernetes >&2
    dpkg-source --no-check -x kubernetes_*.dsc >&2
    src=$(find . -maxdepth 1 -type d -name "kubernetes-*" | head -n 1)
fi
[ -n "$src" ] || { log "no kubernetes source directory under $work"; exit 1; }
cd "$src"

reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$reflect2" ] || { log "missing $reflect2 (package golang-github-modern-go-reflect2-dev)"; exit 1; }
log "replacing vendor/github.com/modern-go/reflect2 with Debian's copy"
rm -rf vendor/github.com/modern-go/reflect2
cp -r "$reflect2" vendor/github.com/modern-go/reflect2

started=$(date +%s)
what=$(printf 'cmd/%s ' "${wanted[@]}")
log "make WHAT=\"${what% }\" (about 9 minutes cold on 2 cores, 3-4 more per binary)"
# The Makefile looks for a git tree for the version stamp; give it one explicitly.
export KUBE_GIT_VERSION="v$version" KUBE_GIT_TREE_STATE=clean
nice -n 10 make WHAT="${what% }" >&2
for c in "${wanted[@]}"; do
    built=$(find _output -type f -name "$c" -perm -u+x -path '*/bin/*' | head -n 1)
    [ -n "$built" ] || { log "build finished without a $c binary"; exit 1; }
    install -m 0755 "$built" "$cache/$c-$version.tmp"
    mv "$cache/$c-$version.tmp" "$cache/$c-$version"
    log "cached $cache/$c-$version"
done
log "built ${wanted[*]} in $(( $(date +%s) - started )) s"
echo "$binary"
