#!/usr/bin/env bash
# Build the project's container images with buildah (Debian's package), offline, and save
# each as an OCI archive under ${DAMON_K8S_CACHE:-~/.cache/damon-k8s}/images:
#
#   base/damon-k8s-python.tar   localhost/damon-k8s-python:<X.Y.Z>-slim-bookworm
#                               the local stand-in for the Dockerfile's default PYTHON_IMAGE
#   node/damon-k8s.tar          localhost/damon-k8s:test            (the project's Dockerfile)
#   node/damon-k8s-workload.tar localhost/damon-k8s-workload:test   (hot and cold memory)
#
# node/ holds what a node needs; `ctr -n k8s.io images import node/<name>.tar` names each
# image as above (the archives carry the full name as org.opencontainers.image.ref.name).
# images.json records, per image: name, archive, image id, uncompressed and archive size,
# build seconds. Sizes are printed at the end.
#
# No registry is reachable here, so python:3.12.x-slim-bookworm cannot be pulled. The base
# is made the way that image is, from the same parts where Debian has them:
#   - Debian 12's minbase (mmdebstrap --variant=minbase bookworm from the machine's apt
#     mirror, merged /usr, docs/man/locales excluded as debian:bookworm-slim does) plus
#     ca-certificates, netbase and tzdata, as the official image installs;
#   - CPython 3.12 in /usr/local. Debian 12 ships 3.11 only, so the interpreter is the
#     machine's own CPython 3.12 build (the one behind .venv, e.g. pyenv's; a shared-library
#     build like the official one), copied in without its site-packages, tests, static
#     library and .pyc files (the official image deletes those too), its binaries stripped
#     (the official one links with --strip-all), its install prefix rewritten to /usr/local
#     in its text files (shebangs, sysconfig data, python-config); ldconfig finds libpython.
#     The Debian packages owning the shared libraries its binaries load (ldd; _tkinter's
#     Tk and X left out, as the official slim image leaves them out) are installed, as the
#     official image keeps exactly those. `ensurepip` gives it pip; python3 -m venv with
#     pip, the stdlib's C modules and useradd are checked in the result;
#   - PATH, LANG=C.UTF-8, PYTHON_VERSION and CMD ["python3"] as the official image sets.
# Its tag names the interpreter's real version (the host's, e.g. 3.12.1, not the
# Dockerfile's default 3.12.7).
#
# The project image is the Dockerfile exactly as users build it, given the base with
# `--build-arg PYTHON_IMAGE=`; its RUN steps have no network (--network none). pip
# installs requirements.lock from wheels only, as always; here the wheels come from a
# wheelhouse under the cache (images/wheels: `pip download` of the lock's exact pins and
# the Dockerfile's setuptools pin, with the machine's pip configuration; or
# DAMON_K8S_WHEELHOUSE, a directory holding them). The RUN steps see it through root's
# home: a directory of ours is mounted over the base's /root for them, holding
# .config/pip/pip.conf (no-index, find-links = /root/wheels) and the wheelhouse at
# /root/wheels. Nothing of it is in the image (a mount at a new path would leave its empty
# mount point in a layer under buildah 1.28). The workload image
# (scripts/images/workload.Dockerfile, tests/vm/guest_lib.py's workload) is built the same
# way from the same base.
#
# Idempotent: an image is rebuilt only when its inputs change (the files its build reads,
# its recipe in this script, its base's image id, for the base the interpreter and the apt
# sources); --force rebuilds all three. Builds run in a private buildah store under
# images/.work, removed at the end; logs in images/logs. One run at a time (a lock).
# Cold, on 2 cores: about 1 min for the base (mmdebstrap downloads), 1-1.5 min for the
# project image, 10 s for the workload; a few seconds when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${DAMON_K8S_CACHE:-$HOME/.cache/damon-k8s}
out="$cache/images"

base_name_prefix=localhost/damon-k8s-python
project_name=localhost/damon-k8s:test
workload_name=localhost/damon-k8s-workload:test
base_tar="$out/base/damon-k8s-python.tar"
project_tar="$out/node/damon-k8s.tar"
workload_tar="$out/node/damon-k8s-workload.tar"
wheels=${DAMON_K8S_WHEELHOUSE:-$out/wheels}
setuptools_pin=$(grep -o 'setuptools==[0-9][^ ]*' Dockerfile | head -n1)

log() { echo "build-images: $*" >&2; }
die() { log "$*"; exit 1; }

force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) die "usage: $0 [--force]" ;;
esac

for tool in buildah mmdebstrap rsync flock sha256sum strip; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool is not installed: scripts/system-deps.sh installs what this needs"
done
command -v runc >/dev/null 2>&1 || command -v crun >/dev/null 2>&1 \
    || die "buildah needs an OCI runtime (runc or crun): scripts/system-deps.sh installs runc"
[ "$(id -u)" -eq 0 ] || die "run as root (buildah's store and mmdebstrap's chroot need it)"
[ -x .venv/bin/python ] || die ".venv is missing: run scripts/bootstrap.sh first"
[ -n "$setuptools_pin" ] || die "Dockerfile: no setuptools==<version> pin found"

mkdir -p "$out/base" "$out/node" "$out/stamps" "$out/logs"
exec 9>"$out/.lock"
flock 9

# The interpreter the base carries: the one the project's tests run on.
python=${DAMON_K8S_IMAGE_PYTHON:-$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')/bin/python3}
read -r pyprefix pyversion pyminor < <("$python" -c \
    'import sys; v = sys.version_info; print(sys.base_prefix, "%d.%d.%d" % v[:3], "%d.%d" % v[:2])')
[ "$pyminor" = 3.12 ] || die "$python is Python $pyversion; the image needs 3.12 (requires-python)"
[ "$pyprefix" != /usr ] \
    || die "$python lives in /usr (a distribution's); give a self-contained build as DAMON_K8S_IMAGE_PYTHON"
[ -x "$pyprefix/bin/python3.12" ] && [ -d "$pyprefix/lib/python3.12" ] \
    || die "$pyprefix does not look like a CPython 3.12 install (bin/python3.12, lib/python3.12)"
base_name="$base_name_prefix:$pyversion-slim-bookworm"

work="$out/.work"
bah() { buildah --root "$work/root" --runroot "$work/run" --storage-driver overlay "$@"; }
cleanup() {
    if [ -d "$work" ]; then
        bah rm --all >/dev/null 2>&1 || true
        bah rmi --all --force >/dev/null 2>&1 || true
        awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r \
            | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf "$work"
    fi
}
trap cleanup EXIT
cleanup
mkdir -p "$work"

sha() { sha256sum | cut -c1-64; }
# Content hash of files (paths relative to the repository), __pycache__ and .pyc left out
# as .dockerignore leaves them out.
files_hash() {
    find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
        | xargs -0 sha256sum | sha
}
stamp_field() { # stamp_field NAME FIELD
    [ -f "$out/stamps/$1.json" ] || return 0
    .venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' \
        "$out/stamps/$1.json" "$2"
}
up_to_date() { # up_to_date NAME ARCHIVE INPUTS
    [ "$force" -eq 0 ] && [ -f "$2" ] && [ "$(stamp_field "$1" inputs)" = "$3" ]
}
# save NAME REF ARCHIVE INPUTS SECONDS: push to the OCI archive, then record the stamp.
save() {
    local name=$1 ref=$2 archive=$3 inputs=$4 seconds=$5 id
    id=$(bah inspect --type image --format '{{.FromImageID}}' "$ref")
    rm -f "$archive.tmp"
    bah push --quiet "$ref" "oci-archive:$archive.tmp:$ref" >/dev/null
    mv "$archive.tmp" "$archive"
    .venv/bin/python - "$out/stamps/$name.json" "$ref" "$archive" "$id" "$seconds" "$inputs" <<'EOF'
import gzip, json, os, sys, tarfile
stamp, ref, archive, image_id, seconds, inputs = sys.argv[1:]
# The image's size as engines report it: its layers, uncompressed.
with tarfile.open(archive) as tar:
    def blob(digest):
        return tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()
    index = json.load(tar.extractfile("index.json"))
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    size = 0
    for layer in manifest["layers"]:
        data = blob(layer["digest"])
        size += len(gzip.decompress(data)) if layer["mediaType"].endswith("gzip") else len(data)
json.dump({"name": ref, "archive": archive, "image_id": image_id, "size": size,
           "archive_size": os.path.getsize(archive), "build_seconds": int(seconds),
           "inputs": inputs}, open(stamp, "w"), indent=1)
print(f"build-images: {ref}: built in {seconds}s, {size / 2**20:.1f} MiB"
      f" ({os.path.getsize(archive) / 2**20:.1f} MiB archive)", file=sys.stderr)
EOF
}
# The base in the private store, under its name (loaded from its archive when not built now).
base_loaded=0
load_base() {
    [ "$base_loaded" -eq 0 ] || return 0
    local id
    id=$(bah pull --quiet "oci-archive:$base_tar")
    bah tag "$id" "$base_name"
    base_loaded=1
}

# ---- the base ------------------------------------------------------------------------

# Binary (deb) sources of bookworm configured on this machine, as sources.list lines.
debian_sources() {
    apt-get indextargets --format '$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT) $(IDENTIFIER)' \
        | awk '$1 == "deb" && $5 == "Packages" && $3 ~ /^bookworm/ {print "deb", $2, $3, $4}' \
        | sort -u
}

is_elf() { [ "$(head -c4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

# The interpreter's files as they would be after `make install` into /usr/local and the
# official image's clean-up: bin, lib (libpython, the standard library without tests and
# site-packages), include, pkg-config files, man pages.
stage_python() {
    local stage=$1 p=$pyprefix
    mkdir -p "$stage/bin" "$stage/lib/pkgconfig" "$stage/include" "$stage/share/man/man1"
    for f in python3.12 python3.12-config pydoc3.12 idle3.12 2to3-3.12; do
        [ -e "$p/bin/$f" ] && cp -a "$p/bin/$f" "$stage/bin/"
    done
    for link in python3:python3.12 python:python3 python3-config:python3.12-config \
        python-config:python3-config pydoc3:pydoc3.12 pydoc:pydoc3 idle3:idle3.12 idle:idle3 \
        2to3:2to3-3.12; do
        [ -e "$stage/bin/${link#*:}" ] && ln -s "${link#*:}" "$stage/bin/${link%%:*}"
    done
    cp -a "$p"/lib/libpython3*.so* "$stage/lib/" 2>/dev/null || true
    cp -a "$p"/lib/pkgconfig/python*.pc "$stage/lib/pkgconfig/" 2>/dev/null || true
    cp -a "$p/include/python3.12" "$stage/include/"
    cp -a "$p"/share/man/man1/python3*.1 "$stage/share/man/man1/" 2>/dev/null || true
    rsync -a --include=/site-packages/README.txt --exclude='/site-packages/*' \
        --exclude=test/ --exclude=tests/ --exclude=idle_test/ --exclude=__pycache__/ \
        --exclude='*.pyc' --exclude='*.pyo' --exclude='libpython*.a' \
        "$p/lib/python3.12/" "$stage/lib/python3.12/"
    # The official image links with --strip-all.
    find "$stage" -type f \( -perm -u+x -o -name '*.so*' \) -print0 \
        | while IFS= read -r -d '' f; do
            if is_elf "$f"; then strip --strip-all "$f"; fi
        done
    # The prefix it was configured with, in scripts' shebangs, sysconfig data, Makefile,
    # python-config and .pc files: it now lives in /usr/local.
    grep -rlIF -- "$p" "$stage" | xargs -r sed -i "s|$p|/usr/local|g"
}

# Debian packages owning the shared libraries the interpreter's binaries load (as the
# official image keeps them), _tkinter's Tk and X libraries left out.
python_runtime_packages() {
    local stage=$1
    find "$stage" -type f ! -name '*tkinter*' -print0 \
        | while IFS= read -r -d '' f; do
            if is_elf "$f"; then ldd "$f" 2>/dev/null; fi
        done \
        | awk -v p="$pyprefix/" '/=>/ { so = $(NF-1); if (index(so, p) == 1) next;
                                      sub("^/(usr/)?", "", so); print "*" so }' \
        | sort -u | xargs -r dpkg-query --search | cut -d: -f1 | sort -u
}

build_base() {
    local started=$SECONDS stage="$work/python" rootfs="$work/rootfs.tar" packages ctr
    log "base: staging CPython $pyversion from $pyprefix"
    stage_python "$stage"
    packages=$(python_runtime_packages "$stage" | paste -sd, -)
    [ -n "$packages" ] || die "base: found no shared libraries for $pyprefix (ldd failed?)"
    debian_sources >"$work/sources.list"
    [ -s "$work/sources.list" ] || die "base: no bookworm deb sources configured in apt"
    log "base: mmdebstrap --variant=minbase bookworm (+ ca-certificates netbase tzdata $packages)"
    mmdebstrap --variant=minbase --mode=root --format=tar \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --include="ca-certificates,netbase,tzdata,$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/groff/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --dpkgopt='path-exclude=/usr/share/linda/*' \
        bookworm "$rootfs" "$work/sources.list" >"$out/logs/base-mmdebstrap.log" 2>&1 \
        || { tail -n 30 "$out/logs/base-mmdebstrap.log" >&2; die "base: mmdebstrap failed"; }

    ctr=$(bah from scratch)
    bah add "$ctr" "$rootfs" / >/dev/null
    bah copy "$ctr" "$stage" /usr/local >/dev/null
    bah config \
        --env PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --env PYTHON_VERSION="$pyversion" \
        --cmd '["python3"]' --os linux --arch amd64 \
        "$ctr"
    # As the official image ends: the loader cache, pip from ensurepip, no bytecode.
    bah run --network none "$ctr" -- sh -euc '
        ldconfig
        python3 -m ensurepip --default-pip >/dev/null
        find /usr/local -depth -type f -name "*.py[co]" -delete
        find /usr/local -depth -type d -name __pycache__ -exec rm -rf {} +
        rm -rf /root/.cache /tmp/* /var/tmp/*
    ' >"$out/logs/base-python.log" 2>&1 \
        || { cat "$out/logs/base-python.log" >&2; die "base: ensurepip failed"; }
    bah commit --quiet --rm --format oci "$ctr" "$base_name" >/dev/null
    base_loaded=1

    # What the Dockerfile relies on: python, venv with pip, the stdlib's C modules, useradd.
    ctr=$(bah from --pull=never "$base_name")
    bah run --network none "$ctr" -- sh -euc '
        python3 --version; python --version; pip --version
        python3 -c "import bz2, ctypes, decimal, hashlib, lzma, readline, sqlite3, ssl, uuid, zlib"
        python3 -m venv /tmp/venv && /tmp/venv/bin/pip --version
        command -v groupadd useradd
    ' >"$out/logs/base-check.log" 2>&1 \
        || { cat "$out/logs/base-check.log" >&2; die "base: the built base does not work"; }
    bah rm "$ctr" >/dev/null
    save base "$base_name" "$base_tar" "$1" $((SECONDS - started))
}

# ---- wheels for requirements.lock ----------------------------------------------------

ensure_wheels() {
    mkdir -p "$wheels"
    if .venv/bin/pip download --quiet --no-index --find-links "$wheels" --only-binary=:all: \
        --no-deps --dest "$wheels" -r requirements.lock "$setuptools_pin" \
        >"$out/logs/wheels.log" 2>&1; then
        return 0
    fi
    log "wheels: fetching the lock's pins into $wheels (pip download, wheels only)"
    .venv/bin/pip download --quiet --only-binary=:all: --no-deps --dest "$wheels" \
        -r requirements.lock "$setuptools_pin" >"$out/logs/wheels.log" 2>&1 || {
        grep -v '^WARNING: Location' "$out/logs/wheels.log" | tail -n 20 >&2
        die "wheels: requirements.lock's wheels could not be fetched and $wheels lacks some;" \
            "put them there (or in DAMON_K8S_WHEELHOUSE), e.g. pip download --only-binary=:all: --no-deps -r requirements.lock $setuptools_pin"
    }
}

# pip inside the RUN steps reads the wheelhouse only: root's home during those steps is a
# directory of ours holding ~/.config/pip/pip.conf, with the wheelhouse at ~/wheels. Mounted
# over the base's own /root (which exists), it leaves nothing in the image; a mount at a
# new path would leave its empty mount point in a layer.
pip_home() {
    mkdir -p "$work/home/.config/pip" "$work/home/wheels"
    printf '[global]\nno-index = true\nfind-links = /root/wheels\n' >"$work/home/.config/pip/pip.conf"
}
offline_bud() { # offline_bud LOGNAME ARGS...: buildah bud with no network, the base local
    local name=$1
    shift
    bah bud --network none --pull=never --layers --format oci \
        --build-arg PYTHON_IMAGE="$base_name" \
        --volume "$work/home:/root" --volume "$wheels:/root/wheels:ro" \
        "$@" >"$out/logs/$name.log" 2>&1 \
        || { tail -n 40 "$out/logs/$name.log" >&2; die "$name: buildah bud failed (log: $out/logs/$name.log)"; }
}

# ---- the project image: the Dockerfile as users build it -----------------------------

project_context=(Dockerfile .dockerignore requirements.lock pyproject.toml README.md agent operator)
build_project() {
    local started=$SECONDS
    load_base
    log "project: buildah bud -f Dockerfile --build-arg PYTHON_IMAGE=$base_name"
    offline_bud project --file Dockerfile --tag "$project_name" "$repo"
    save project "$project_name" "$project_tar" "$1" $((SECONDS - started))
}

# ---- the workload image: tests/vm/guest_lib.py's workload ----------------------------

workload_context=(scripts/images/workload.Dockerfile tests/vm/guest_lib.py requirements.lock)
build_workload() {
    local started=$SECONDS context="$work/workload" numpy
    numpy=$(grep -E '^numpy==' requirements.lock | cut -d= -f3)
    [ -n "$numpy" ] || die "workload: requirements.lock pins no numpy"
    load_base
    mkdir -p "$context"
    cp scripts/images/workload.Dockerfile "$context/Dockerfile"
    cp tests/vm/guest_lib.py "$context/"
    log "workload: buildah bud -f scripts/images/workload.Dockerfile (numpy $numpy)"
    offline_bud workload --build-arg NUMPY_VERSION="$numpy" --tag "$workload_name" "$context"
    save workload "$workload_name" "$workload_tar" "$1" $((SECONDS - started))
}

# ---- what to build -------------------------------------------------------------------

started=$SECONDS
ensure_wheels # first: without them nothing but the base could be built
pip_home
# Each recipe's own text is part of its inputs: changing how an image is made rebuilds it.
base_inputs=$({
    declare -f build_base stage_python python_runtime_packages debian_sources is_elf
    "$python" -VV
    echo "$pyprefix $base_name"
    debian_sources
} | sha)
if up_to_date base "$base_tar" "$base_inputs"; then
    log "base: $base_name up to date"
else
    build_base "$base_inputs"
fi
base_id=$(stamp_field base image_id)

project_inputs=$({
    declare -f build_project offline_bud pip_home
    echo "$base_id $project_name"
    files_hash "${project_context[@]}"
} | sha)
if up_to_date project "$project_tar" "$project_inputs"; then
    log "project: $project_name up to date"
else
    build_project "$project_inputs"
fi

workload_inputs=$({
    declare -f build_workload offline_bud pip_home
    echo "$base_id $workload_name"
    files_hash "${workload_context[@]}"
} | sha)
if up_to_date workload "$workload_tar" "$workload_inputs"; then
    log "workload: $workload_name up to date"
else
    build_workload "$workload_inputs"
fi

.venv/bin/python - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
images = {n: json.loads((out / "stamps" / f"{n}.json").read_text()) for n in ("base", "project", "workload")}
(out / "images.json").write_text(json.dumps(images, indent=1) + "\n")
for key, image in images.items():
    print(f"{key:9} {image['name']:48} {image['size'] / 2**20:7.1f} MiB"
          f" (archive {image['archive_size'] / 2**20:6.1f} MiB)  {image['archive']}")
EOF
log "done in $((SECONDS - started))s"
