"""The host's side of a VM guest run as a node of the host's control plane (no kubelet).

The control plane (etcd + kube-apiserver, ``scripts/controlplane.sh``) and the operator
run on the host; the guest is the node. The guest reaches the apiserver at 10.0.2.2 (QEMU
user networking), which the serving certificate names; its kubeconfig is the host's admin
kubeconfig pointed there, handed over through the share. A guest scenario
(``tests/vm/scenarios/cluster_agent.py`` or ``pod_churn.py``) starts the agent daemon
there and samples what happens into the share.

- ``GuestNode``: one boot of a scenario in a worker thread while the test drives the
  cluster; ``GuestShare`` its share (``progress.json``, ``teardown``).
- ``make_node`` / ``make_namespace`` / ``make_pod`` / ``remove_pods``: the API objects a
  kubelet node would have; the guest makes the pods' cgroups itself (``PodRef``).
- ``wait_for`` polls with a described timeout; ``condition`` / ``node_scheme`` read
  statuses.

The fixtures that hold the control plane and run the operator are in tests/vm/conftest.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import pytest
import yaml
from kube_support import Kubectl

INSTANCE_LABEL = "damon.io/instance"
GUEST_API = "https://10.0.2.2:6443"
# After the guest's first sample, how long its agent may take to write its first status:
# 35 s on a quiet host under emulation, over 2 min beside image builds.
AGENT_START_S = 200


@dataclass(frozen=True)
class PodRef:
    """A pod a namespaced scheme selects: its API object on the host, its cgroup in the guest."""

    namespace: str
    name: str
    uid: str
    container_id: str

    def guest_pod(self) -> dict[str, str]:
        """What the guest needs to make the pod's cgroup as a kubelet would."""
        return {"uid": self.uid, "container_id": self.container_id}


def wait_for[T](
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    every: float = 1.0,
    describe: Callable[[], object] | None = None,
) -> T:
    """Poll ``predicate`` until it is truthy; on a timeout fail with ``describe()``'s view."""
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last:
        if time.monotonic() > deadline:
            seen = describe() if describe else last
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; seen: {seen!r}")
        time.sleep(every)
        last = predicate()
    return last


def guest_kubeconfig(kubeconfig: Path) -> str:
    """The host's admin kubeconfig, pointed at the host as the guest sees it."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = GUEST_API
    return yaml.safe_dump(config)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def node_scheme(damon_node: dict[str, Any] | None, name: str) -> dict[str, Any]:
    schemes = ((damon_node or {}).get("status") or {}).get("schemes") or []
    return next((s for s in schemes if s.get("name") == name), {})


class GuestShare:
    """The running boot's share, found in the boot's fresh work directory."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir

    def shares(self) -> list[Path]:
        return sorted(self.work_dir.glob("damon-vm-*/share"), key=lambda p: p.stat().st_mtime)

    def progress(self) -> dict[str, Any]:
        for share in reversed(self.shares()):
            try:
                parsed: dict[str, Any] = json.loads((share / "progress.json").read_text())
                return parsed
            except (FileNotFoundError, ValueError):
                continue
        return {}

    def teardown(self) -> None:
        # Every boot directory: a boot retried before its script started leaves two.
        for share in self.shares():
            (share / "teardown").write_text("scheme deleted\n")


class GuestNode:
    """One boot of ``scenarios/cluster_agent.py`` in a worker thread, while the test
    drives the cluster: the guest's share, whether it still runs, and its end."""

    def __init__(
        self,
        *,
        assets: harness.VmAssets,
        config: harness.VmConfig,
        work_root: Path,
        params: Mapping[str, Any],
        kubeconfig: Path,
        script: str = "cluster_agent.py",
    ) -> None:
        self.config = config
        work_dir = Path(tempfile.mkdtemp(prefix="cluster-", dir=work_root))
        self.share = GuestShare(work_dir)
        self.started = time.monotonic()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._booting = self._pool.submit(
            harness.boot_python,
            (harness.SCENARIOS / script).read_text(),
            config=config,
            files={"params.json": json.dumps(params), "kubeconfig": guest_kubeconfig(kubeconfig)},
            assets=assets,
            work_dir=work_dir,
        )

    def check_alive(self) -> None:
        if self._booting.done():
            run = self._booting.result()  # raises the boot's error, if any
            pytest.fail(f"the guest ended before the test did:\n{run.describe()}")

    def first_sample(self) -> float:
        """Wait for the guest's first sample (its workloads started on node 1); return
        when it came. The boot may first wait for another process's guest
        (harness.BOOT_LOCK), which must not eat the time the cluster gets to act."""

        def sampled() -> dict[str, Any]:
            self.check_alive()
            return self.share.progress()

        # The boot itself fails once it waited for the lock that long (check_alive says
        # so); once it runs, its script samples within its own deadline.
        wait_for(
            sampled,
            timeout=self.lock_wait_s + self.config.deadline_s,
            what="the guest's first sample (workloads started on node 1)",
        )
        return time.monotonic()

    @property
    def lock_wait_s(self) -> float:
        """How long a boot waits for another one's lock (harness._boot_once) at most."""
        return self.config.deadline_s + 2 * self.config.margin_s

    def teardown(self) -> None:
        self.share.teardown()

    def agent_log_tail(self, size: int = 1500) -> str:
        for share in reversed(self.share.shares()):
            log = share / "agent.log"
            if log.exists():
                return log.read_text(errors="replace")[-size:]
        return ""

    def result(self) -> harness.GuestRun:
        """The boot, once the guest powered off (after ``teardown``, or its deadline)."""
        try:
            # Still waiting for the lock (another process's guest) counts too.
            timeout = self.lock_wait_s + self.config.host_deadline_s + 30
            return self._booting.result(timeout=timeout)
        finally:
            self._pool.shutdown(wait=False)


def wait_for_agent(
    kubectl: Kubectl, node: str, guest: GuestNode, timeout: float = AGENT_START_S
) -> None:
    """Wait for the guest agent's first DamonNode status (it names the backend).

    Schemes are applied after this: the agent's start under emulation (35 s on a quiet
    host, over 2 min beside image builds) must not eat the time they get to act.
    """

    def agent_up() -> bool:
        guest.check_alive()
        damon_node = kubectl.get("damonnode", node) or {}
        return bool((damon_node.get("status") or {}).get("backend"))

    wait_for(
        agent_up,
        timeout=timeout,
        what="the guest agent's first DamonNode status",
        describe=lambda: {
            "node_status": (kubectl.get("damonnode", node) or {}).get("status"),
            "agent_log": guest.agent_log_tail(),
        },
    )


def make_node(kubectl: Kubectl, instance: str) -> tuple[str, str]:
    """The guest's Node object; returns its name and the label the schemes select it by."""
    node = f"vm-{instance}"
    label = uuid.uuid4().hex[:8]
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "labels": {
                    INSTANCE_LABEL: instance,
                    "kubernetes.io/hostname": node,
                    "damon.io/vm-node": label,
                },
            },
        }
    )
    return node, label


def make_namespace(kubectl: Kubectl, instance: str) -> str:
    namespace = f"vm-{instance}"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {INSTANCE_LABEL: instance}},
        }
    )
    # The Pod is refused without it. The controller-manager's serviceaccount controller
    # makes it too (scripts/controlplane.sh runs one): whichever comes first.
    kubectl("create", "serviceaccount", "default", "-n", namespace, check=False)
    return namespace


def make_pod(
    kubectl: Kubectl, namespace: str, node: str, name: str, labels: Mapping[str, str]
) -> PodRef:
    """A pod bound to the guest node (no kubelet runs it: the guest makes its cgroups,
    named by the uid the apiserver gave it)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "app"}],
        },
    }
    kubectl.apply(pod)
    uid = kubectl.json("pod", name, "-n", namespace)["metadata"]["uid"]
    return PodRef(namespace, name, uid, uuid.uuid4().hex + uuid.uuid4().hex)


def remove_pods(
    kubectl: Kubectl, namespace: str, pods: Sequence[PodRef], schemes: Sequence[str]
) -> None:
    strip = '{"metadata":{"finalizers":null}}'
    for scheme in schemes:
        ref = ("damonscheme", scheme, "-n", namespace)
        kubectl("patch", *ref, "--type=merge", "-p", strip, check=False)
        kubectl("delete", *ref, "--ignore-not-found", "--wait=false", check=False)
    # No kubelet confirms a pod's end: force it. The namespace then stays Terminating
    # (no namespace controller runs here), as the other suites' namespaces do.
    for pod in pods:
        kubectl(
            "delete",
            "pod",
            pod.name,
            "-n",
            namespace,
            "--force",
            "--grace-period=0",
            "--ignore-not-found",
            check=False,
        )
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
