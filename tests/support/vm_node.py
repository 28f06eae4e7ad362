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
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
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
# The order in which guest.sh reaches its stages (node-progress).
STAGES = ("mounts", "modules", "containerd", "images", "kubelet")


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


def kubelet_binary() -> Path:
    return harness.cache_dir() / f"kubelet-{K8S_VERSION}"


def node_vm_config(deadline_s: float, *, cpus: int = 2) -> harness.VmConfig:
    """The guest a node boots: user networking, the default NUMA shape."""
    return harness.VmConfig(net=True, deadline_s=deadline_s, margin_s=60, cpus=cpus)


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
    ) -> None:
        self.name = name
        self.kubeconfig = kubeconfig
        self.assets = assets
        self.config = config
        self.image_dirs = [harness.cache_dir() / "node-images", *image_dirs]
        self.labels = dict(labels or {})
        self.up_s = up_s
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
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.submitted = time.monotonic()
        self._booting = self._pool.submit(
            harness.boot,
            'exec /bin/bash "$SHARE/node-guest.sh"',
            config=self.config,
            files={
                "node-guest.sh": GUEST_SCRIPT,
                "node.kubeconfig": node_kubeconfig,
                "ca.crt": ca,
            },
            assets=self.assets,
            work_dir=self.work_dir,
            env=env,
            host_paths=[harness.cache_dir(), *self.image_dirs],
        )
        return self

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
            self.kubectl("delete", "node", self.name, "--ignore-not-found", "--wait=false")

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
        self.wait_stage("mounts", self.config.host_deadline_s + 2 * self.config.margin_s)
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
        return ExecResult(int(rc_file.read_text().strip()), output)

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
