#!/usr/bin/env bash
# The images a VM node needs of its own, made without any registry, as OCI archives under
# ${DAMON_K8S_CACHE:-~/.cache/damon-k8s}/node-images/:
#
#   pause.tar    localhost/pause:3.2     the sandbox image (containerd's sandbox_image):
#                                        scripts/node/pause.c, static, from scratch
#   busybox.tar  localhost/busybox:1.35  Debian's busybox-static with its applets linked,
#                                        from scratch: a small image for test pods
#
# buildah (Debian's package) builds them as root in a private store under the cache (vfs
# driver, so nothing needs overlay or user namespaces, and the machine's own
# /var/lib/containers is left alone); `buildah push ... oci-archive:` writes each archive,
# which a node imports with `ctr -n k8s.io images import` (scripts/node/guest.sh).
#
# Idempotent: the archives are rebuilt only when missing or when this script, pause.c or
# the busybox binary changed (a stamp records their checksums). Prints the directory on
# its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DAMON_K8S_CACHE:-$HOME/.cache/damon-k8s}
out="$cache/node-images"
pause_ref=localhost/pause:3.2
busybox_ref=localhost/busybox:1.35
log() { echo "build-node-images: $*" >&2; }

packages=(buildah busybox-static gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}" >&2
fi

mkdir -p "$out"
exec 8>"$out/.lock"
flock 8
stamp=$(cat "$0" "$here/node/pause.c" /bin/busybox | sha256sum | cut -d' ' -f1)
if [ -s "$out/pause.tar" ] && [ -s "$out/busybox.tar" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$out"
    exit 0
fi

started=$(date +%s%N)
work=$(mktemp -d "$out/.work.XXXXXX")
cleanup() {
    # The vfs store holds plain directories; unmount anything buildah left mounted first.
    buildah_ rm --all >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
export TMPDIR="$work/tmp"
mkdir -p "$TMPDIR"
buildah_() {
    buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"
}

image() {  # image REF ARCHIVE ROOTFS CONFIG...: from scratch, ROOTFS's files, config, push
    local ref=$1 archive=$2 rootfs=$3 container
    shift 3
    container=$(buildah_ from scratch)
    buildah_ copy "$container" "$rootfs" / >/dev/null
    buildah_ config "$@" "$container"
    buildah_ commit --quiet "$container" "$ref" >/dev/null
    buildah_ push --quiet "$ref" "oci-archive:$archive.tmp:$ref"
    mv "$archive.tmp" "$archive"
    log "$ref -> $archive ($(du -h "$archive" | cut -f1))"
}

mkdir -p "$work/pause"
gcc -Os -static -Wall -Wextra -o "$work/pause/pause" "$here/node/pause.c"
strip "$work/pause/pause"
image "$pause_ref" "$out/pause.tar" "$work/pause" \
    --entrypoint '["/pause"]' --cmd '[]' --label io.kubernetes.pod.sandbox=pause

root="$work/busybox"
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
image "$busybox_ref" "$out/busybox.tar" "$root" \
    --cmd '["sh"]' --env PATH=/bin

echo "$stamp" >"$out/stamp"
log "built in $(( ($(date +%s%N) - started) / 1000000 )) ms"
echo "$out"
