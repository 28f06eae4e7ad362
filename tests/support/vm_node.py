"""A VM guest as a real node of the host's control plane: containerd and kubelet.

``VmNode`` boots the harness's guest (tests/support/harness.py) with user networking and
runs ``scripts/node/guest.sh`` in it, in a worker thread, while the caller drives the
cluster from the host: the guest mounts tmpfs where a node writes, loads the kernel's
netfilter and bridge modules, starts containerd (native snapshotter, CNI bridge), imports
the OCI archives of the given directories (the pause image first of all) and starts
kubelet, which registers the Node on the host's apiserver (https://10.0.2.2:6443) with
the control plane's node credentials (``controlplane.sh``'s node.kubeconfig: user
system:node:damon-vm, group system:nodes).

The host talks to the running guest through the boot's share: ``node-progress`` (the
stages reached, with the guest's uptime), the containerd and kubelet logs, and a command
channel: ``VmNode.exec(script)`` runs a bash script in the guest (as root, in the node's
mount namespace) and returns its exit status and output. ``teardown`` (or leaving the
``with`` block) stops kubelet and containerd and powers the guest off; the Node object is
deleted afterwards.

Images: ``scripts/build-node-images.sh`` makes the node's own (``SANDBOX_IMAGE``,
``BUSYBOX_IMAGE``) under the cache; ``image_dirs`` adds directories of more OCI archives
(the project's image and the workload images), imported the same way.

``build_binaries`` and ``build_node_images`` run the two build scripts (each a no-op when
cached) and say how long they took. Everything here raises ``NodeError`` (no pytest), so
scripts/vm-node uses it too.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import yaml

REPO = harness.REPO_ROOT
GUEST_SCRIPT = REPO / "scripts" / "node" / "guest.sh"
BUILD_BINARIES = REPO / "scripts" / "build-apiserver.sh"
BUILD_NODE_IMAGES = REPO / "scripts" / "build-node-images.sh"
KUBECTL = "/usr/bin/kubectl"
K8S_VERSION = os.environ.get("DAMON_APISERVER_VERSION", "1.20.2")
SANDBOX_IMAGE = "localhost/pause:3.2"
BUSYBOX_IMAGE = "localhost/busybox:1.35"
NODE_IP = "10.0.2.15"
GUEST_API = "https://10.0.2.2:6443"
# The order in which guest.sh reaches its stages (node-progress); "disk" only with a disk.
STAGES = ("mounts", "modules", "disk", "containerd", "images", "kubelet")
SNAPSHOTTER = "overlayfs"
# Image disks: qcow2 files under <cache>/node-disk, one per set of archives. Bump
# DISK_LAYOUT when guest.sh changes what it keeps there.
DISK_LAYOUT = 1
DISK_SIZE = "16G"
DISK_KEEP = 3  # newest bases kept; older ones go once an hour old (a running node's is newer)


class NodeError(Exception):
    """The node could not be built, booted or brought up."""


def _run_build(script: Path, timeout: float) -> tuple[Path, float]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(script)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise NodeError(f"{script.name} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise NodeError(f"{script.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1]), time.monotonic() - started


def build_binaries(timeout: float = 3600) -> float:
    """kube-apiserver, kube-controller-manager, kube-scheduler and kubelet, cached;
    returns the seconds it took (next to nothing when cached)."""
    _path, seconds = _run_build(BUILD_BINARIES, timeout)
    if not kubelet_binary().is_file():
        raise NodeError(f"{BUILD_BINARIES.name} left no kubelet at {kubelet_binary()}")
    return seconds


def build_node_images(timeout: float = 600) -> tuple[Path, float]:
    """The node's pause and busybox OCI archives, cached: their directory and the seconds."""
    return _run_build(BUILD_NODE_IMAGES, timeout)


def archives(image_dirs: Sequence[Path]) -> list[Path]:
    """The OCI archives a node imports from ``image_dirs``, in the guest's order."""
    return [a for d in image_dirs if d.is_dir() for a in sorted(d.glob("*.tar")) if a.is_file()]


def image_disk_key(image_dirs: Sequence[Path], snapshotter: str = SNAPSHOTTER) -> str:
    """Names the image disk holding exactly these archives (path, size, time), unpacked
    for ``snapshotter``."""
    digest = hashlib.sha256(f"layout {DISK_LAYOUT} {snapshotter}\n".encode())
    for archive in archives(image_dirs):
        stat = archive.stat()
        digest.update(f"{archive} {stat.st_size} {int(stat.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _qemu_img(*args: str) -> None:
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NodeError(f"qemu-img {' '.join(args)} failed: {done.stderr.strip()}")


def prepare_image_disk(
    *,
    assets: harness.VmAssets,
    image_dirs: Sequence[Path],
    work_root: Path,
    snapshotter: str = SNAPSHOTTER,
    deadline_s: float = 900,
) -> tuple[Path, float]:
    """A disk with containerd's root holding every archive of ``image_dirs``, imported and
    unpacked (a base for ``VmNode(image_disk=True)``): cached under <cache>/node-disk by
    ``image_disk_key``; made by a boot of guest.sh with NODE_PREPARE=1 when missing,
    starting from a copy of the newest earlier disk (unchanged archives are skipped,
    unchanged layers are not unpacked again). Returns it and the seconds this took."""
    disks = harness.cache_dir() / "node-disk"
    base = disks / f"{image_disk_key(image_dirs, snapshotter)}.qcow2"
    with _locked(disks / ".lock"):
        if base.is_file():
            return base, 0.0
        started = time.monotonic()
        earlier = sorted(disks.glob("*[0-9a-f].qcow2"), key=lambda d: d.stat().st_mtime)
        part = disks / f"{base.stem}.part.qcow2"
        for attempt in (1, 2):
            run = _prepare_once(
                part,
                earlier[-1] if earlier else None,
                assets=assets,
                image_dirs=image_dirs,
                work_root=work_root,
                snapshotter=snapshotter,
                deadline_s=deadline_s,
            )
            progress = run.text("node-progress") if run.path("node-progress").exists() else ""
            if run.rc == 0 and "prepared " in progress:
                break
            part.unlink(missing_ok=True)
            # The emulator's int3 race (harness.VmConfig.single_threaded_tcg) kills a guest
            # at random, here seen 6 s into the boot; the disk is made from its start again.
            if attempt == 2 or not harness.died_of_int3(run.console):
                raise NodeError(f"the image disk was not made:\n{progress}\n{run.describe()}")
        part.rename(base)
        cutoff = time.time() - 3600
        for old in earlier[: max(0, len(earlier) + 1 - DISK_KEEP)]:
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
        return base, time.monotonic() - started


def _prepare_once(
    part: Path,
    earlier: Path | None,
    *,
    assets: harness.VmAssets,
    image_dirs: Sequence[Path],
    work_root: Path,
    snapshotter: str,
    deadline_s: float,
) -> harness.GuestRun:
    """One boot of guest.sh with NODE_PREPARE=1 filling ``part``, a copy of ``earlier``."""
    if earlier is not None:
        shutil.copyfile(earlier, part)
    else:
        _qemu_img("create", "-q", "-f", "qcow2", str(part), DISK_SIZE)
    work = Path(tempfile.mkdtemp(prefix="node-disk-", dir=work_root))
    config = harness.VmConfig(
        net=False, deadline_s=deadline_s, margin_s=60, disks=(part,), extra_cmdline=NODE_CMDLINE
    )
    return harness.boot(
        'exec /bin/bash "$SHARE/node-guest.sh"',
        config=config,
        files={"node-guest.sh": GUEST_SCRIPT},
        assets=assets,
        work_dir=work,
        env={
            "NODE_PREPARE": "1",
            "NODE_DISK": "/dev/vda",
            "NODE_IMAGES": ":".join(str(d) for d in image_dirs),
            "NODE_SNAPSHOTTER": snapshotter,
        },
        host_paths=[harness.cache_dir(), *image_dirs],
    )


def kubelet_binary() -> Path:
    return harness.cache_dir() / f"kubelet-{K8S_VERSION}"


NODE_MIB = (1536, 1024)

# NUMA balancing off from boot, as scripts/node/guest.sh wants it (NODE_NUMA_BALANCING=0):
# turned off at run time instead, its static key patched the scheduler's text while other
# vCPUs ran it, and multi-threaded TCG's int3 race (harness.VmConfig) killed the guest
# (CI, 2026-12-05: "Oops: int3" in migrate_task_rq_fair, right after that write).
NODE_CMDLINE = ("numa_balancing=disable",)


def node_vm_config(deadline_s: float, *, cpus: int = 2) -> harness.VmConfig:
    """The guest a node boots: user networking, 1.5 GiB of DRAM-like node 0 and the
    default CXL-like node 1. Node 0 holds kubelet, containerd, the agent, the operator,
    the page cache of their images and the workloads (zram's compressed pages too): at
    1 GiB the kernel's own reclaim swapped pods no scheme selected (10 MiB of one in the
    walk of 2026-12-05), which muddles what a scheme's pageout did."""
    return harness.VmConfig(
        net=True,
        deadline_s=deadline_s,
        margin_s=60,
        cpus=cpus,
        node_mib=NODE_MIB,
        extra_cmdline=NODE_CMDLINE,
    )


def node_credentials(kubeconfig: Path) -> tuple[str, bytes]:
    """The kubelet's kubeconfig (as the guest reaches the apiserver) and the cluster's CA.

    ``controlplane.sh`` writes node.kubeconfig beside the admin kubeconfig; a control plane
    without one (started by an older script) lends the admin's, pointed at the guest's
    view of the host."""
    admin = yaml.safe_load(kubeconfig.read_text())
    ca = base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])
    node = kubeconfig.parent / "node.kubeconfig"
    if node.is_file():
        return node.read_text(), ca
    for cluster in admin["clusters"]:
        cluster["cluster"]["server"] = GUEST_API
    return yaml.safe_dump(admin), ca


@dataclass(frozen=True)
class ExecResult:
    rc: int
    output: str


class VmNode:
    """One boot of the guest as node ``name``, in a worker thread (see the module's doc)."""

    def __init__(
        self,
        *,
        name: str,
        kubeconfig: Path,
        assets: harness.VmAssets,
        work_root: Path,
        config: harness.VmConfig,
        image_dirs: Sequence[Path] = (),
        labels: Mapping[str, str] | None = None,
        up_s: float = 0,
        image_disk: bool = True,
    ) -> None:
        self.name = name
        self.kubeconfig = kubeconfig
        self.assets = assets
        self.config = config
        self.image_dirs = [harness.cache_dir() / "node-images", *image_dirs]
        self.labels = dict(labels or {})
        self.up_s = up_s
        self.image_disk = image_disk
        self.disk_prepare_s: float | None = None  # when the boot used an image disk
        self.work_dir = Path(tempfile.mkdtemp(prefix="node-", dir=work_root))
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._booting: concurrent.futures.Future[harness.GuestRun] | None = None
        self._seen: dict[str, float] = {}  # stage -> host monotonic time first seen
        self.submitted = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> VmNode:
        if not kubelet_binary().is_file():
            raise NodeError(f"no kubelet at {kubelet_binary()}: run {BUILD_BINARIES}")
        node_kubeconfig, ca = node_credentials(self.kubeconfig)
        env = {
            "NODE_NAME": self.name,
            "NODE_KUBELET": str(kubelet_binary()),
            "NODE_IMAGES": ":".join(str(d) for d in self.image_dirs),
            "NODE_LABELS": ",".join(f"{k}={v}" for k, v in self.labels.items()),
            "NODE_UP_S": str(int(self.up_s)),
            "NODE_SANDBOX": SANDBOX_IMAGE,
        }
        files: dict[str, str | bytes | Path] = {
            "node-guest.sh": GUEST_SCRIPT,
            "node.kubeconfig": node_kubeconfig,
            "ca.crt": ca,
        }
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.submitted = time.monotonic()
        self._booting = self._pool.submit(self._boot, env, files)
        return self

    def _boot(self, env: dict[str, str], files: dict[str, str | bytes | Path]) -> harness.GuestRun:
        config = self.config
        if self.image_disk:
            # The images on a disk of their own: a copy-on-write layer over the base that
            # holds them (made first when missing), discarded with the boot's directory.
            base, self.disk_prepare_s = prepare_image_disk(
                assets=self.assets, image_dirs=self.image_dirs, work_root=self.work_dir.parent
            )
            layer = self.work_dir / "node-disk.qcow2"
            _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(layer))
            config = dataclasses.replace(config, disks=(layer,))
            env = {**env, "NODE_DISK": "/dev/vda"}
        return harness.boot(
            'exec /bin/bash "$SHARE/node-guest.sh"',
            config=config,
            files=files,
            assets=self.assets,
            work_dir=self.work_dir,
            env=env,
            host_paths=[harness.cache_dir(), *self.image_dirs],
        )

    def __enter__(self) -> VmNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def teardown(self) -> None:
        """Ask the guest to stop its node and power off (every boot directory: a boot
        retried before its script started leaves two)."""
        for share in self._shares():
            (share / "teardown").write_text("stop\n")

    def result(self, timeout: float | None = None) -> harness.GuestRun:
        """The boot, once the guest powered off (after ``teardown``, ``up_s`` or its
        deadline); raises the boot's own error, if any."""
        if self._booting is None:
            raise NodeError("the node was never started")
        wait = timeout
        if wait is None:
            wait = self.config.host_deadline_s + 2 * self.config.margin_s
        try:
            return self._booting.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            raise NodeError(f"the guest did not power off within {wait:.0f} s") from None

    def close(self) -> harness.GuestRun | None:
        """Teardown, wait for the guest, delete the Node object; the run when there was one."""
        if self._booting is None:
            return None
        self.teardown()
        try:
            return self.result()
        except (harness.VmError, NodeError):
            return None
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            # The control plane is shared: another session may be restarting it just now.
            for _ in range(30):
                deleted = self.kubectl(
                    "delete", "node", self.name, "--ignore-not-found", "--wait=false"
                )
                if deleted.returncode == 0:
                    break
                time.sleep(2)

    # --- the running guest ----------------------------------------------------------------

    def _shares(self) -> list[Path]:
        return sorted(self.work_dir.glob("damon-vm-*/share"), key=lambda p: p.stat().st_mtime)

    @property
    def share(self) -> Path | None:
        shares = self._shares()
        return shares[-1] if shares else None

    def progress(self) -> dict[str, float]:
        """Stages reached (guest uptime at each); ``failed`` maps to -1 when it failed."""
        share = self.share
        reached: dict[str, float] = {}
        try:
            lines = (share / "node-progress").read_text().splitlines() if share else []
        except FileNotFoundError:
            lines = []
        for line in lines:
            if line.startswith("failed:"):
                reached["failed"] = -1.0
                continue
            stage, _, uptime = line.partition(" ")
            reached[stage] = float(uptime)
        now = time.monotonic()
        for stage in reached:
            self._seen.setdefault(stage, now)
        return reached

    def failure(self) -> str | None:
        share = self.share
        try:
            lines = (share / "node-progress").read_text().splitlines() if share else []
        except FileNotFoundError:
            return None
        return next((line for line in lines if line.startswith("failed:")), None)

    def log(self, name: str, tail: int = 4000) -> str:
        """The tail of a log the guest writes into the share (kubelet.log, containerd.log)."""
        share = self.share
        try:
            return (share / name).read_text(errors="replace")[-tail:] if share else ""
        except FileNotFoundError:
            return ""

    def oopsed_on_int3(self) -> bool:
        """Whether the guest's kernel died of the emulator's int3 race, by its console."""
        return any(
            harness.died_of_int3(console.read_text(errors="replace"))
            for console in self.work_dir.glob("*/console.log")
        )

    def describe(self) -> str:
        return (
            f"node {self.name}: progress {self.progress()}, {self.failure() or 'no failure'}\n"
            f"--- kubelet.log (tail) ---\n{self.log('kubelet.log')}\n"
            f"--- containerd.log (tail) ---\n{self.log('containerd.log', 2000)}"
        )

    def check_alive(self) -> None:
        failed = self.failure()
        if failed:
            raise NodeError(f"the guest's node set-up {failed}\n{self.describe()}")
        if self._booting is not None and self._booting.done():
            run = self._booting.result()  # raises the boot's error, if any
            raise NodeError(f"the guest ended early:\n{run.describe()}\n{self.describe()}")

    def wait_stage(self, stage: str, timeout: float) -> float:
        """Wait until the guest reached ``stage``; its guest uptime then."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            reached = self.progress()
            if stage in reached:
                return reached[stage]
            if time.monotonic() > deadline:
                raise NodeError(f"no stage {stage!r} within {timeout:.0f} s\n{self.describe()}")
            time.sleep(0.5)

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def node_object(self) -> dict[str, Any] | None:
        found = self.kubectl("get", "node", self.name, "-o", "json")
        if found.returncode != 0:
            return None
        parsed: dict[str, Any] = json.loads(found.stdout)
        return parsed

    def ready(self) -> bool:
        conditions = ((self.node_object() or {}).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def wait_ready(self, timeout: float) -> float:
        """Wait for the Node's Ready condition; return the guest's uptime when the host saw
        it (to the second), estimated from when the host first saw the set-up's start."""
        # Until the node's set-up starts, the boot's own deadlines bound the wait (another
        # boot holding the VM, the image disk's preparation): check_alive ends it.
        self.wait_stage("mounts", 4 * 3600)
        deadline = time.monotonic() + timeout
        while not self.ready():
            self.check_alive()
            if time.monotonic() > deadline:
                node = self.node_object()
                conditions = ((node or {}).get("status") or {}).get("conditions")
                raise NodeError(
                    f"Node {self.name} not Ready within {timeout:.0f} s; conditions "
                    f"{json.dumps(conditions)}\n{self.describe()}"
                )
            time.sleep(1.0)
        return self.uptime_now()

    def uptime_now(self) -> float:
        """The guest's uptime now, estimated from the first stage the host saw."""
        reached = self.progress()
        first = reached["mounts"]
        return round(first + time.monotonic() - self._seen["mounts"], 1)

    def exec(self, script: str, timeout: float = 60) -> ExecResult:
        """Run ``script`` with bash in the guest (root, the node's mounts); its exit status
        and output (stdout and stderr)."""
        share = self.share
        if share is None or "kubelet" not in self.progress():
            raise NodeError("the node is not up yet (no command channel before kubelet)")
        request = share / "exec" / uuid.uuid4().hex
        request.parent.mkdir(exist_ok=True)
        partial = request.with_suffix(".part")
        partial.write_text(script)
        partial.rename(request.with_suffix(".sh"))
        rc_file = request.with_suffix(".rc")
        deadline = time.monotonic() + timeout
        while not rc_file.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise NodeError(f"the guest did not run {script[:80]!r} within {timeout:.0f} s")
            time.sleep(0.25)
        output = request.with_suffix(".out").read_text(errors="replace")
        rc = int(rc_file.read_text().strip())
        # Answered requests move aside (kept for a person): the guest's loop globs the
        # directory every half second, and a walk leaves hundreds of them.
        done = request.parent / "done"
        done.mkdir(exist_ok=True)
        for suffix in (".sh", ".out", ".rc"):
            request.with_suffix(suffix).rename(done / f"{request.name}{suffix}")
        return ExecResult(rc, output)

    def pod_log(self, namespace: str, pod: str, container: str, tail: int = 200) -> str:
        """A container's log as kubelet keeps it in the guest (``kubectl logs`` cannot
        reach a kubelet behind QEMU's user networking): the last ``tail`` lines of every
        restart's file, oldest first."""
        pattern = f"/var/log/pods/{namespace}_{pod}_*/{container}/*.log"
        found = self.exec(f"for f in $(ls -tr {pattern}); do tail -n {tail} $f; done")
        if found.rc != 0:
            raise NodeError(f"no log of {namespace}/{pod}/{container}: {found.output[-500:]}")
        return found.output

    def copy_logs(self, dest: Path) -> None:
        """The guest's logs and progress, into ``dest`` (a person's copy of a run)."""
        share = self.share
        if share is None:
            return
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("node-progress", "kubelet.log", "containerd.log", "node-images.txt"):
            if (share / name).exists():
                shutil.copy(share / name, dest / name)
