"""The full path: a guest as a node of the host's control plane, schemes through kubectl.

The control plane (etcd + kube-apiserver, ``scripts/controlplane.sh``) and the operator
run on the host; the guest is the node. The guest reaches the apiserver at 10.0.2.2 (QEMU
user networking), which the serving certificate names; its kubeconfig is the host's admin
kubeconfig pointed there, handed over through the share. ``scenarios/cluster_agent.py``
starts workloads whose memory starts on node 1 and the agent daemon beside them.

The host then does what a cluster admin would: ``kubectl apply`` of schemes, waits for
their ``Ready`` condition and for the node's DamonNode to report applied bytes, lets the
pages settle, deletes the schemes and waits for the node's status to drop them. The
guest's samples (written to the share every second) give the placement and residency of
the hot and cold pages over time and whether the agent's monitoring went away.

``test_kubectl_apply_on_host_tiers_the_guest_node``, on the default guest (6.12, the
kernel backend): a whole-node ClusterDamonScheme, or a DamonScheme selecting one pod
beside a decoy cgroup, with migrate_hot to the dram tier and migrate_cold to the cxl
tier, as in examples/cxl-tiering.yaml. The schemes carry the example's ``young`` filters
(promote only pages found accessed, never demote one found accessed). The guest's 6.12
DAMON has no allow filters, so this also runs the agent's reject-only rewrite end to end:
the promotion's "allow young" reaches the kernel as "reject not young". The demotion's
minimum age (10 s) is short enough that it acts while the promotion runs, so the
placement checked shows that the two do not fight: hot pages promoted stay promoted.

``test_userspace_backend_reclaims_and_tiers_pods_on_debian12_kernel``, on Debian 12's
stock 6.1 guest, which has no DAMON at all: the agent runs with ``--backend auto`` and
must fall back to its own userspace engine (soft-dirty access checks, process_madvise,
move_pages). Three pods on the node, each a workload with a hot and a cold array on
node 1: ``reclaimed`` (selected by a pageout scheme for memory idle 5 s), ``tiered``
(selected by a migrate_hot scheme to the dram tier) and ``decoy`` (selected by none).
Both schemes have the same monitoring, so the agent runs them in one context over both
pods' processes, kept apart by ``target`` filters: the tiered pod's cold array is as
cold as the reclaimed pod's and must stay resident, the reclaimed pod's hot array is as
hot as the tiered pod's and must stay on node 1, and the decoy must not change at all.

The boot runs in a worker thread while the test drives the cluster (``GuestNode``); the
host learns the boot's share directory from the fresh work directory it gives the boot.
Whatever fails, the host writes ``teardown`` into the share (the guest then ends its
watch) and waits for the boot, the guest powers off (its own deadline, then the host's),
and the operator stops.

The control plane is held through ``kube_support.held_controlplane`` (tests/support), as
tests/kube and tests/helm hold it: pytest does not share tests/kube's fixtures with
tests/vm/.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import kube_support
import pytest
import yaml
from kube_support import Kubectl

pytestmark = [pytest.mark.vm, pytest.mark.kube]

REPO = harness.REPO_ROOT
INSTANCE_LABEL = "damon.io/instance"
GUEST_API = "https://10.0.2.2:6443"
SCHEME = "vm-cxl-tiering"
HOT_MIB = 32
COLD_MIB = 192
# Guest: watch at most this long from the script's start, and at most this long after the
# host says it deleted the schemes; the VM's own deadline comes after both. Limits for a
# loaded host: emulation slows down with it (the agent took 35 s to start on a quiet host,
# over 2 min beside image builds); a quiet run ends in under 2 min, at the teardown.
WATCH_LIMIT_S = 360
TEARDOWN_LIMIT_S = 40
VM = harness.VmConfig(net=True, deadline_s=420, margin_s=60)
# Host: after the guest's first sample, wait this long for its agent's first status; after
# the apply, this long for Ready with applied bytes, and this long in all for the hot
# pages to settle on node 0 (then the guest's samples are judged as they are).
AGENT_START_S = 200
READY_TIMEOUT_S = 120
SETTLE_LIMIT_S = 80
POD_LABELS = {"app": "vm-tiering"}

# The userspace-backend test: Debian 12's stock kernel, which has no DAMON at all.
USERSPACE_SERIES = "6.1"
RECLAIM_SCHEME = "vm-reclaim-cold"
PROMOTE_SCHEME = "vm-promote-hot"
USERSPACE_WORKLOADS = {
    # pod name -> (hot MiB, cold MiB); every pod is labelled app=vm-<name>.
    "reclaimed": (32, 128),
    "tiered": (32, 128),
    "decoy": (16, 32),
}
# After the apply: all in, this long for both schemes to settle (most of the reclaimed
# pod's cold array out, most of the tiered pod's hot array on node 0).
USERSPACE_SETTLE_LIMIT_S = 120


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


def _wait_for[T](
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


@pytest.fixture(scope="module")
def kubeconfig() -> Iterator[Path]:
    with kube_support.held_controlplane() as path:
        yield path


@pytest.fixture(scope="module")
def kubectl(kubeconfig: Path) -> Kubectl:
    kubectl = Kubectl(kubeconfig)
    kubectl("apply", "-f", str(REPO / "crds"))
    names = kubectl("get", "-f", str(REPO / "crds"), "-o", "name").stdout.split()
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return kubectl


@pytest.fixture
def instance(kubectl: Kubectl) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    strip = '{"metadata":{"finalizers":null}}'
    selector = f"{INSTANCE_LABEL}={name}"
    for kind in ("clusterdamonschemes.damon.io", "damonnodes.damon.io", "nodes"):
        for found in kubectl("get", kind, "-l", selector, "-o", "name", check=False).stdout.split():
            if kind != "nodes":
                kubectl("patch", found, "--type=merge", "-p", strip, check=False)
            kubectl("delete", found, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def operator(kubeconfig: Path, kubectl: Kubectl, instance: str, tmp_path: Path) -> Iterator[Path]:
    executable = Path(sys.executable).parent / "damon-operator"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install the project (scripts/bootstrap.sh)")
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "--instance", instance, "--standalone"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
    try:
        yield log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def guest_kubeconfig(kubeconfig: Path) -> str:
    """The host's admin kubeconfig, pointed at the host as the guest sees it."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = GUEST_API
    return yaml.safe_dump(config)


def tiering_scheme(instance: str, node_label: str, pod: PodRef | None) -> dict[str, Any]:
    """The scheme the host applies: whole node (ClusterDamonScheme), or one pod's namespace
    (DamonScheme selecting the pod, monitoring mode ``auto``)."""
    # Intervals and regions as in the kernel tiering scenario (guest_lib.tiering_kdamond
    # says why): under emulation a 5 ms sampling interval costs the guest too much, and
    # 40 ms still catches every hot-loop pass; 100 regions find scattered hot huge pages.
    monitoring: dict[str, Any] = {
        "intervals": {"sample": "40ms", "aggregation": "800ms", "update": "1s"},
        "regions": {"min": 100, "max": 1000},
    }
    spec: dict[str, Any] = {
        "nodeSelector": {"matchLabels": {"damon.io/vm-node": node_label}},
        "monitoring": monitoring,
        "schemes": [
            {
                "name": "promote-hot",
                "action": "migrate_hot",
                "tier": "dram",
                "accessPattern": {
                    "accessRate": {"min": "25%", "max": "100%"},
                    # Five aggregations: the regions split hot from cold first. A page
                    # DAMON never checked reads as young, so a young-filtered promotion of
                    # a region still half cold moves its cold pages too (one run ended
                    # with 21 % of the cold array on node 0 at 1 aggregation's age).
                    "age": {"min": "4s", "max": "max"},
                },
                "filters": [{"type": "young", "allow": True}],
            },
            {
                "name": "demote-cold",
                "action": "migrate_cold",
                "tier": "cxl",
                "accessPattern": {
                    "accessRate": {"min": "0%", "max": "0%"},
                    "age": {"min": "10s", "max": "max"},
                },
                "filters": [{"type": "young", "allow": False}],
            },
        ],
    }
    metadata: dict[str, Any] = {"name": SCHEME, "labels": {INSTANCE_LABEL: instance}}
    if pod is None:
        monitoring["mode"] = "paddr"
        spec["wholeNode"] = True
        kind = "ClusterDamonScheme"
    else:
        # auto: vaddr where it can, but 6.12's vaddr cannot migrate, so the agent
        # monitors physical memory with the pod's memcgs (one kernel scheme per memcg).
        spec["podSelector"] = {"matchLabels": POD_LABELS}
        metadata["namespace"] = pod.namespace
        kind = "DamonScheme"
    return {"apiVersion": "damon.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _node_scheme(damon_node: dict[str, Any] | None, name: str = SCHEME) -> dict[str, Any]:
    schemes = ((damon_node or {}).get("status") or {}).get("schemes") or []
    return next((s for s in schemes if s.get("name") == name), {})


def _applied_bytes(node_scheme: dict[str, Any]) -> int:
    return sum(int(s.get("appliedBytes", 0)) for s in node_scheme.get("stats") or [])


def _share_of(placement: dict[str, int], node: int) -> float:
    total = sum(placement.values())
    return placement.get(str(node), 0) / total if total else 0.0


def _of(sample: dict[str, Any], workload: str) -> dict[str, Any]:
    """One workload's part of a guest sample (placements, residency, faults, loops)."""
    part: dict[str, Any] = sample["workloads"][workload]
    return part


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
    ) -> None:
        self.config = config
        work_dir = Path(tempfile.mkdtemp(prefix="cluster-", dir=work_root))
        self.share = GuestShare(work_dir)
        self.started = time.monotonic()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._booting = self._pool.submit(
            harness.boot_python,
            (harness.SCENARIOS / "cluster_agent.py").read_text(),
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
        _wait_for(
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


def wait_for_agent(kubectl: Kubectl, node: str, guest: GuestNode) -> None:
    """Wait for the guest agent's first DamonNode status (it names the backend).

    Schemes are applied after this: the agent's start under emulation (35 s on a quiet
    host, over 2 min beside image builds) must not eat the time they get to act.
    """

    def agent_up() -> bool:
        guest.check_alive()
        damon_node = kubectl.get("damonnode", node) or {}
        return bool((damon_node.get("status") or {}).get("backend"))

    _wait_for(
        agent_up,
        timeout=AGENT_START_S,
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


def host_agent_processes(node: str) -> list[int]:
    """Host processes whose command line names the guest node (an agent for it would)."""
    return [pid for pid in harness.processes_using(Path(node)) if pid != os.getpid()]


@pytest.mark.parametrize("target", ["node", "pod"])
def test_kubectl_apply_on_host_tiers_the_guest_node(
    vm: harness.Runner,
    vm_figures: harness.Figures,
    kubectl: Kubectl,
    kubeconfig: Path,
    instance: str,
    operator: Path,
    target: str,
) -> None:
    """``node``: a whole-node ClusterDamonScheme. ``pod``: a DamonScheme selecting one
    pod; a second workload outside it (a "decoy" cgroup) must not move."""
    node, label = make_node(kubectl, instance)
    pod = None
    workloads: list[dict[str, Any]] = [{"name": "app", "hot_mib": HOT_MIB, "cold_mib": COLD_MIB}]
    if target == "pod":
        pod = make_pod(kubectl, make_namespace(kubectl, instance), node, "workload", POD_LABELS)
        workloads[0]["pod"] = pod.guest_pod()
        # As hot as the pod's workload, in a cgroup no scheme selects: it must stay put.
        workloads.append({"name": "decoy", "hot_mib": 16, "cold_mib": 16, "cgroup": "/decoy"})
    params: dict[str, Any] = {
        "node": node,
        "backend": "kernel",
        "workloads": workloads,
        "status_interval_s": 3,
        "watch_limit_s": WATCH_LIMIT_S,
        "teardown_limit_s": TEARDOWN_LIMIT_S,
    }
    guest = GuestNode(
        assets=vm.assets, config=VM, work_root=vm.work_dir, params=params, kubeconfig=kubeconfig
    )
    figures: dict[str, Any] = {}
    try:
        figures = _drive_cluster(kubectl, node, instance, label, pod, guest)
    finally:
        guest.teardown()
        if pod is not None:
            remove_pods(kubectl, pod.namespace, [pod], [SCHEME])
        try:
            run = guest.result()
        finally:
            vm_figures.record(**figures)
    vm_figures.record_run(run)
    agent_log = run.text("agent.log") if run.path("agent.log").exists() else ""
    run.check()
    result = run.json()
    samples = result["samples"]
    dram, cxl = result["dram"], result["cxl"]
    hot_on_dram = [round(_share_of(_of(s, "app")["hot"], dram), 3) for s in samples]
    cold_on_cxl = [round(_share_of(_of(s, "app")["cold"], cxl), 3) for s in samples]
    kdamond_from = next((s["t"] for s in samples if s["kdamonds"]), None)
    hot_from = next((s["t"] for s, h in zip(samples, hot_on_dram, strict=True) if h >= 0.7), None)
    vm_figures.record(
        guest_kdamond_started_s=kdamond_from,
        guest_hot_70pct_s=hot_from,
        hot_on_node0=[(s["t"], h) for s, h in zip(samples, hot_on_dram, strict=True)][::3],
        cold_on_node1_min=min(cold_on_cxl),
        cold_on_node1_last=cold_on_cxl[-1],
        kdamonds=[s["kdamonds"] for s in samples],
        kdamonds_gone_s=result["monitoring_gone_s"],
        kdamond_schemes=result.get("kdamond_schemes"),
        teardown_seen_s=result["teardown_seen_s"],
        test_s=round(time.monotonic() - guest.started, 1),
    )
    tail = agent_log[-3000:]
    assert (dram, cxl) == (0, 1)
    assert result["damon_sysfs"], "the default guest must have DAMON sysfs"
    # The workload started on the CXL node, and the cluster's scheme moved it.
    assert _share_of(_of(samples[0], "app")["hot"], cxl) >= 0.95, samples[0]
    # One kdamond per source tier: promotion watches the CXL node, demotion the DRAM node
    # (runtime.planning, "Migrations on paddr").
    assert max(s["kdamonds"] for s in samples) == 2, tail
    before_teardown = [
        h
        for s, h in zip(samples, hot_on_dram, strict=True)
        if result["teardown_seen_s"] is None or s["t"] < result["teardown_seen_s"]
    ]
    assert before_teardown[-1] >= 0.7, hot_on_dram
    assert cold_on_cxl[-1] >= 0.9, cold_on_cxl
    assert _of(samples[-1], "app")["loops"] > _of(samples[0], "app")["loops"]
    # Deleting the scheme on the host turned the guest's kdamond off while the agent ran.
    assert result["agent_running_at_end"], tail
    assert result["monitoring_gone_s"] is not None, ([s["kdamonds"] for s in samples], tail)
    assert result["nr_kdamonds_after_agent"] == 0
    assert result["agent_rc"] == 0, tail
    if pod is not None:
        # The decoy's hot pages are as hot as the pod's, but not the pod's: they stay.
        decoy_on_cxl = [round(_share_of(_of(s, "decoy")["hot"], cxl), 3) for s in samples]
        vm_figures.record(decoy_hot_on_node1_min=min(decoy_on_cxl))
        assert min(decoy_on_cxl) >= 0.95, decoy_on_cxl


def _drive_cluster(
    kubectl: Kubectl,
    node: str,
    instance: str,
    label: str,
    pod: PodRef | None,
    guest: GuestNode,
) -> dict[str, Any]:
    """Apply, wait for Ready and applied bytes and settled pages, delete; return figures."""
    guest_started = guest.first_sample()
    wait_for_agent(kubectl, node, guest)
    agent_s = round(time.monotonic() - guest_started, 1)
    kubectl.apply(tiering_scheme(instance, label, pod))
    scheme_ref = (
        ("clusterdamonscheme", SCHEME)
        if pod is None
        else ("damonscheme", SCHEME, "-n", pod.namespace)
    )
    applied_at = time.monotonic()

    def ready_and_applied() -> tuple[dict[str, Any], dict[str, Any]] | None:
        guest.check_alive()
        scheme = kubectl.get(*scheme_ref)
        per_node = _node_scheme(kubectl.get("damonnode", node))
        ready = _condition(scheme, "Ready").get("status") == "True"
        # The operator sums the nodes' reports into the scheme's status a moment after
        # the node's own status shows them: wait for both.
        totals = int(((scheme or {}).get("status") or {}).get("appliedBytes", 0))
        if ready and _applied_bytes(per_node) > 0 and totals > 0 and scheme is not None:
            return scheme, per_node
        return None

    found = _wait_for(
        ready_and_applied,
        timeout=READY_TIMEOUT_S,
        what="scheme Ready, applied bytes on the guest node and in the scheme's status",
        describe=lambda: {
            "scheme_status": (kubectl.get(*scheme_ref) or {}).get("status"),
            "node_status": _node_scheme(kubectl.get("damonnode", node)),
            "kdamond_schemes": guest.share.progress().get("kdamond_schemes"),
        },
    )
    assert found is not None
    scheme, per_node = found
    ready_s = round(time.monotonic() - applied_at, 1)

    def hot_settled() -> bool:
        guest.check_alive()
        progress = guest.share.progress()
        recent = progress.get("samples", [])[-3:]
        dram = progress.get("dram", 0)
        return len(recent) == 3 and all(
            _share_of(_of(s, "app")["hot"], dram) >= 0.9 for s in recent
        )

    deadline = applied_at + SETTLE_LIMIT_S
    while time.monotonic() < deadline and not hot_settled():
        time.sleep(1.0)
    settled_s = round(time.monotonic() - applied_at, 1)
    scheme = kubectl.get(*scheme_ref) or scheme
    per_node = _node_scheme(kubectl.get("damonnode", node)) or per_node
    status = scheme.get("status") or {}
    figures = {
        "submit_to_first_sample_s": round(guest_started - guest.started, 1),
        "agent_status_after_first_sample_s": agent_s,
        "ready_after_apply_s": ready_s,
        "settled_after_apply_s": settled_s,
        "conditions": {
            c["type"]: f"{c['status']}/{c.get('reason', '')}" for c in status.get("conditions", [])
        },
        "scheme_applied": status.get("applied"),
        "node_applied_mib": {
            s["name"]: int(s.get("appliedBytes", 0)) >> 20 for s in per_node.get("stats", [])
        },
    }
    assert _condition(scheme, "Accepted").get("status") == "True", status
    assert _condition(scheme, "Ready").get("status") == "True", status
    assert int(status.get("appliedBytes", 0)) > 0, status

    deleting = time.monotonic()
    kubectl("delete", *scheme_ref, "--timeout=60s")
    _wait_for(
        lambda: not _node_scheme(kubectl.get("damonnode", node)),
        timeout=60,
        what="the guest node's status without the scheme",
    )
    figures["node_status_dropped_after_delete_s"] = round(time.monotonic() - deleting, 1)
    return figures


# ---------------------------------------------------------------------------------------
# The userspace backend on a kernel without DAMON


def userspace_schemes(instance: str, namespace: str, node_label: str) -> list[dict[str, Any]]:
    """Two DamonSchemes of one namespace: pageout for the ``reclaimed`` pod, migrate_hot to
    the dram tier for the ``tiered`` pod. Equal monitoring: the agent runs one context.

    Sampling every 50 ms and aggregating every 500 ms, as tests/vm/test_userspace_engine.py
    does for this engine under emulation (clear_refs once per sampling interval per
    process). A region is cold when no sample of 5 s saw it written (soft-dirty sees
    writes only, and the hot loops write); hot when at least half the samples of an
    aggregation saw it written. No filters beyond the pods': the userspace backend
    evaluates address and target filters only, and the planner's target filters are
    what keep each scheme to its own pod.
    """
    monitoring = {
        "mode": "auto",
        "intervals": {"sample": "50ms", "aggregation": "500ms", "update": "2s"},
        "regions": {"min": 100, "max": 400},
    }
    reclaim = {
        "name": "pageout-cold",
        "action": "pageout",
        "accessPattern": {
            "accessRate": {"min": "0%", "max": "0%"},
            "age": {"min": "5s", "max": "max"},
        },
    }
    promote = {
        "name": "promote-hot",
        "action": "migrate_hot",
        "tier": "dram",
        "accessPattern": {
            "accessRate": {"min": "50%", "max": "100%"},
            "age": {"min": "1s", "max": "max"},
        },
    }
    return [
        {
            "apiVersion": "damon.io/v1alpha1",
            "kind": "DamonScheme",
            # The instance label: only this test's operator takes it (handlers.py).
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {INSTANCE_LABEL: instance},
            },
            "spec": {
                "nodeSelector": {"matchLabels": {"damon.io/vm-node": node_label}},
                "podSelector": {"matchLabels": {"app": f"vm-{pod}"}},
                "monitoring": monitoring,
                "schemes": [scheme],
            },
        }
        for name, pod, scheme in (
            (RECLAIM_SCHEME, "reclaimed", reclaim),
            (PROMOTE_SCHEME, "tiered", promote),
        )
    ]


def _resident_share(
    sample: dict[str, Any], workload: str, array: str, progress: dict[str, Any]
) -> float:
    start, end = progress["spans"][workload][array]
    pages = (end - start) // progress["page"]
    return _of(sample, workload)[f"{array}_resident"] / pages if pages else 0.0


def _reclaimed(sample: dict[str, Any], progress: dict[str, Any]) -> float:
    """Share of the reclaimed pod's cold array no longer resident."""
    return 1.0 - _resident_share(sample, "reclaimed", "cold", progress)


def _promoted(sample: dict[str, Any], progress: dict[str, Any]) -> float:
    """Share of the tiered pod's hot array on the dram node."""
    return _share_of(_of(sample, "tiered")["hot"], progress["dram"])


def test_userspace_backend_reclaims_and_tiers_pods_on_debian12_kernel(
    vm_figures: harness.Figures,
    kubectl: Kubectl,
    kubeconfig: Path,
    instance: str,
    operator: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``damon-agent daemon --backend auto`` on 6.1 (no DAMON): the userspace engine
    reclaims one pod's cold memory and promotes another pod's hot memory, each scheme
    only within its pod, and leaves a decoy pod alone."""
    try:
        assets = harness.VmAssets.from_cache(series=USERSPACE_SERIES)
    except harness.VmAssetsMissingError as error:
        pytest.fail(str(error))
    node, label = make_node(kubectl, instance)
    namespace = make_namespace(kubectl, instance)
    pods = {
        name: make_pod(kubectl, namespace, node, name, {"app": f"vm-{name}"})
        for name in USERSPACE_WORKLOADS
    }
    params: dict[str, Any] = {
        "node": node,
        "backend": "auto",
        "workloads": [
            {"name": name, "hot_mib": hot, "cold_mib": cold, "pod": pods[name].guest_pod()}
            for name, (hot, cold) in USERSPACE_WORKLOADS.items()
        ],
        "status_interval_s": 3,
        "watch_limit_s": WATCH_LIMIT_S,
        "teardown_limit_s": TEARDOWN_LIMIT_S,
    }
    guest = GuestNode(
        assets=assets,
        config=VM,
        # Short: virtiofsd's socket path under it must fit a sockaddr_un.
        work_root=tmp_path_factory.mktemp("vm-us"),
        params=params,
        kubeconfig=kubeconfig,
    )
    figures: dict[str, Any] = {}
    try:
        node_status = _drive_userspace(kubectl, instance, node, label, namespace, guest, figures)
    finally:
        guest.teardown()
        remove_pods(kubectl, namespace, list(pods.values()), [RECLAIM_SCHEME, PROMOTE_SCHEME])
        try:
            run = guest.result()
        finally:
            vm_figures.record(**figures)
    vm_figures.record_run(run)
    agent_log = run.text("agent.log") if run.path("agent.log").exists() else ""
    tail = agent_log[-3000:]
    run.check()
    result = run.json()
    samples = result["samples"]
    dram, cxl, page = result["dram"], result["cxl"], result["page"]
    teardown_s = result["teardown_seen_s"]
    watched = [s for s in samples if teardown_s is None or s["t"] < teardown_s]
    first, last = watched[0], watched[-1]
    reclaimed = [round(_reclaimed(s, result), 3) for s in samples]
    promoted = [round(_promoted(s, result), 3) for s in samples]

    def series(workload: str, array: str, measure: str) -> list[float]:
        if measure == "resident":
            return [round(_resident_share(s, workload, array, result), 3) for s in samples]
        nid = dram if measure == "dram" else cxl
        return [round(_share_of(_of(s, workload)[array], nid), 3) for s in samples]

    def majflt(workload: str) -> int:
        return int(_of(samples[-1], workload)["majflt"] - _of(samples[0], workload)["majflt"])

    hot_pages = {
        name: (result["spans"][name]["hot"][1] - result["spans"][name]["hot"][0]) // page
        for name in USERSPACE_WORKLOADS
    }
    # What the agent reported while both schemes ran (the host deletes them one by one).
    reports = [
        s["agent"] for s in watched if s["agent"] and len(s["agent"].get("schemes", [])) == 2
    ]
    fallback_lines = [line for line in agent_log.splitlines() if "trying the userspace" in line]
    backend_condition = _condition({"status": node_status}, "BackendAvailable")
    vm_figures.record(
        kernel=result["kernel"],
        swap_mib=result["swap_kib"] >> 10,
        reclaimed_cold_share=[(s["t"], r) for s, r in zip(samples, reclaimed, strict=True)][::5],
        reclaimed_cold_share_last=round(_reclaimed(last, result), 3),
        reclaimed_hot_resident_min=min(series("reclaimed", "hot", "resident")),
        reclaimed_hot_resident_last=round(_resident_share(last, "reclaimed", "hot", result), 3),
        reclaimed_hot_on_node1_min=min(series("reclaimed", "hot", "cxl")),
        reclaimed_majflt=majflt("reclaimed"),
        reclaimed_hot_pages=hot_pages["reclaimed"],
        tiered_hot_on_node0=[(s["t"], p) for s, p in zip(samples, promoted, strict=True)][::5],
        tiered_hot_on_node0_last=round(_promoted(last, result), 3),
        tiered_cold_on_node1_min=min(series("tiered", "cold", "cxl")),
        tiered_cold_resident_min=min(series("tiered", "cold", "resident")),
        decoy_resident_min=min(
            series("decoy", "hot", "resident") + series("decoy", "cold", "resident")
        ),
        decoy_on_node1_min=min(series("decoy", "hot", "cxl") + series("decoy", "cold", "cxl")),
        decoy_majflt=majflt("decoy"),
        agent_reports=reports[-1:] or None,
        fallback_log=fallback_lines[:1],
        backend_condition=backend_condition,
        monitoring_gone_s=result["monitoring_gone_s"],
        teardown_seen_s=teardown_s,
        agents_left_in_guest=result["agents_left"],
        test_s=round(time.monotonic() - guest.started, 1),
    )
    # The guest is what the test says it is: Debian 12's kernel, no DAMON, two tiers.
    assert result["kernel"].startswith("6.1."), result["kernel"]
    assert not result["damon_sysfs"], "the 6.1 guest must have no DAMON sysfs"
    assert (dram, cxl) == (0, 1)
    # Anonymous memory is paged out to swap: without it pageout cannot reclaim a page.
    assert result["swap_kib"] > 0, (
        "no swap in the guest (its console says why /init could not start zram; "
        "scripts/vm-assets.sh rebuilds the initramfs)"
    )
    # --backend auto fell back to userspace, and said why: in the status and in its log.
    assert node_status.get("backend") == "userspace", node_status.get("backend")
    assert backend_condition.get("status") == "True", backend_condition
    assert backend_condition.get("reason") == "FellBack", backend_condition
    assert "damon/admin" in backend_condition.get("message", ""), backend_condition
    assert fallback_lines and "damon/admin" in fallback_lines[0], tail
    assert "access checks with soft_dirty" in agent_log, tail
    # One vaddr context over both selected pods' processes; the decoy's is not in it.
    assert reports, (
        "the agent never reported both schemes running at /v1/snapshot; it answered: "
        f"{sorted({json.dumps(s['agent']) for s in watched})[:5]}"
    )
    assert reports[-1]["backend"] == "userspace", reports[-1]
    assert reports[-1]["operations"] == ["vaddr"], reports[-1]
    assert reports[-1]["targets"] == [2], reports[-1]
    # Every array started resident on node 1.
    for name in USERSPACE_WORKLOADS:
        for array in ("hot", "cold"):
            assert _share_of(_of(first, name)[array], cxl) >= 0.95, (name, array, first)
            assert _resident_share(first, name, array, result) >= 0.95, (name, array, first)
    # Reclaim: most of the reclaimed pod's cold array went out; its hot array stayed in
    # (at most a quarter of its pages came back from swap in all) and on node 1.
    assert _reclaimed(last, result) >= 0.8, reclaimed
    assert _resident_share(last, "reclaimed", "hot", result) >= 0.95, series(
        "reclaimed", "hot", "resident"
    )
    assert majflt("reclaimed") <= hot_pages["reclaimed"] // 4, majflt("reclaimed")
    assert min(series("reclaimed", "hot", "cxl")) >= 0.7, series("reclaimed", "hot", "cxl")
    # Tiering: most of the tiered pod's hot array is on node 0; its cold array, as cold
    # as the reclaimed pod's, stayed resident (no pageout) and on node 1 (no promotion).
    assert _promoted(last, result) >= 0.8, promoted
    assert min(series("tiered", "cold", "cxl")) >= 0.9, series("tiered", "cold", "cxl")
    assert min(series("tiered", "cold", "resident")) >= 0.95, series("tiered", "cold", "resident")
    # The decoy pod, selected by neither scheme: every page resident on node 1 throughout.
    for array in ("hot", "cold"):
        assert min(series("decoy", array, "resident")) >= 0.95, series("decoy", array, "resident")
        assert min(series("decoy", array, "cxl")) >= 0.95, series("decoy", array, "cxl")
    for name in USERSPACE_WORKLOADS:
        assert _of(last, name)["loops"] > _of(first, name)["loops"], name
    # Deleting the schemes stopped the agent's monitoring while it ran; then it stopped
    # cleanly and left no process, in the guest or on the host.
    assert result["agent_running_at_end"], tail
    assert result["monitoring_gone_s"] is not None, ([s["agent"] for s in samples[-5:]], tail)
    assert result["agent_rc"] == 0, tail
    assert result["agents_left"] == [], result["agents_left"]
    assert host_agent_processes(node) == []


def _drive_userspace(
    kubectl: Kubectl,
    instance: str,
    node: str,
    label: str,
    namespace: str,
    guest: GuestNode,
    figures: dict[str, Any],
) -> dict[str, Any]:
    """Apply both schemes, wait for Ready and applied bytes and settled pages, delete them;
    return the DamonNode status seen once settled. ``figures`` fills as it goes."""
    guest_started = guest.first_sample()
    figures["submit_to_first_sample_s"] = round(guest_started - guest.started, 1)

    wait_for_agent(kubectl, node, guest)
    figures["agent_status_after_first_sample_s"] = round(time.monotonic() - guest_started, 1)
    for obj in userspace_schemes(instance, namespace, label):
        kubectl.apply(obj)
    applied_at = time.monotonic()
    refs = {
        name: ("damonscheme", name, "-n", namespace) for name in (RECLAIM_SCHEME, PROMOTE_SCHEME)
    }

    def ready_and_applied() -> dict[str, Any] | None:
        guest.check_alive()
        damon_node = kubectl.get("damonnode", node)
        for name, ref in refs.items():
            scheme = kubectl.get(*ref)
            ready = _condition(scheme, "Ready").get("status") == "True"
            totals = int(((scheme or {}).get("status") or {}).get("appliedBytes", 0))
            if not (ready and totals > 0 and _applied_bytes(_node_scheme(damon_node, name)) > 0):
                return None
        return damon_node

    def seen() -> dict[str, Any]:
        damon_node = kubectl.get("damonnode", node) or {}
        return {
            "schemes": {
                name: (kubectl.get(*ref) or {}).get("status") for name, ref in refs.items()
            },
            "node_status": damon_node.get("status"),
            "guest_agent": [s.get("agent") for s in guest.share.progress().get("samples", [])[-1:]],
        }

    _wait_for(
        ready_and_applied,
        timeout=READY_TIMEOUT_S,
        what="both schemes Ready, with applied bytes on the guest node and in their status",
        describe=seen,
    )
    figures["ready_after_apply_s"] = round(time.monotonic() - applied_at, 1)

    def settled() -> bool:
        guest.check_alive()
        progress = guest.share.progress()
        recent = progress.get("samples", [])[-3:]
        return len(recent) == 3 and all(
            _reclaimed(s, progress) >= 0.9 and _promoted(s, progress) >= 0.9 for s in recent
        )

    deadline = applied_at + USERSPACE_SETTLE_LIMIT_S
    while time.monotonic() < deadline and not settled():
        time.sleep(1.0)
    figures["settled_after_apply_s"] = round(time.monotonic() - applied_at, 1)
    node_status: dict[str, Any] = (kubectl.get("damonnode", node) or {}).get("status") or {}
    figures |= {
        "status_backend": node_status.get("backend"),
        "status_kernel_release": (node_status.get("capabilities") or {}).get("kernelRelease"),
        "node_conditions": {
            c["type"]: f"{c['status']}/{c.get('reason', '')}: {c.get('message', '')}"
            for c in node_status.get("conditions", [])
        },
        "node_applied_mib": {
            f"{s['name']}/{one['name']}": int(one.get("appliedBytes", 0)) >> 20
            for s in node_status.get("schemes", [])
            for one in s.get("stats", [])
        },
        "node_scheme_conditions": {
            s["name"]: {c["type"]: f"{c['status']}/{c.get('reason', '')}" for c in s["conditions"]}
            for s in node_status.get("schemes", [])
        },
    }
    for name, ref in refs.items():
        scheme = kubectl.get(*ref)
        status = (scheme or {}).get("status") or {}
        assert _condition(scheme, "Accepted").get("status") == "True", (name, status)
        assert _condition(scheme, "Ready").get("status") == "True", (name, status)
        # On the node, as planned: no warning (a pageout without swap would carry one).
        on_node = _node_scheme({"status": node_status}, name)
        degraded = _condition({"status": on_node}, "Degraded")
        assert degraded.get("status") == "False", (name, on_node)

    deleting = time.monotonic()
    for ref in refs.values():
        kubectl("delete", *ref, "--timeout=60s")
    _wait_for(
        lambda: not any(_node_scheme(kubectl.get("damonnode", node), n) for n in refs),
        timeout=60,
        what="the guest node's status without either scheme",
    )
    figures["node_status_dropped_after_delete_s"] = round(time.monotonic() - deleting, 1)
    return node_status
