"""The full path: a guest as a node of the host's control plane, tiering through kubectl.

The control plane (etcd + kube-apiserver, ``scripts/controlplane.sh``) and the operator
run on the host; the guest is the node. The guest reaches the apiserver at 10.0.2.2 (QEMU
user networking), which the serving certificate names; its kubeconfig is the host's admin
kubeconfig pointed there, handed over through the share. ``scenarios/cluster_agent.py``
starts a workload whose memory starts on node 1 and the agent daemon beside it.

The host then does what a cluster admin would: ``kubectl apply`` of a whole-node
ClusterDamonScheme (migrate_hot to the dram tier, migrate_cold to the cxl tier, as in
examples/cxl-tiering.yaml), waits for its ``Ready`` condition and for the node's DamonNode
to report applied bytes, lets the hot pages settle, deletes the scheme and waits for the
node's status to drop it. The guest's samples (written to the share every second) give the
placement of the hot and cold pages over time and whether its kdamond went away.

The schemes carry the example's ``young`` filters (promote only pages found accessed,
never demote one found accessed). The guest's 6.12 DAMON has no allow filters, so this
also runs the agent's reject-only rewrite end to end: the promotion's "allow young"
reaches the kernel as "reject not young". The demotion's minimum age (10 s) is short
enough that it acts while the promotion runs, so the placement checked shows that the
two do not fight: hot pages promoted stay promoted.

The boot runs in a worker thread while the test drives the cluster; the host learns the
boot's share directory from the fresh work directory it gives the boot. Whatever fails, the
host writes ``teardown`` into the share (the guest then ends its watch) and waits for the
boot, the guest powers off (its own deadline, then the host's), and the operator stops.

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
from collections.abc import Callable, Iterator
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
# host says it deleted the scheme; the VM's own deadline comes after both.
WATCH_LIMIT_S = 200
TEARDOWN_LIMIT_S = 40
VM = harness.VmConfig(net=True, deadline_s=240, margin_s=60)
# Host: after the apply, wait this long for Ready with applied bytes, and this long in all
# for the hot pages to settle on node 0 (then the guest's samples are judged as they are).
READY_TIMEOUT_S = 120
SETTLE_LIMIT_S = 80
POD_LABELS = {"app": "vm-tiering"}


@dataclass(frozen=True)
class PodRef:
    """The pod a namespaced scheme selects: its API object on the host, its cgroup in the guest."""

    namespace: str
    name: str
    uid: str
    container_id: str

    def scheme_ref(self) -> tuple[str, ...]:
        return ("damonscheme", SCHEME, "-n", self.namespace)


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
                    "age": {"min": "800ms", "max": "max"},
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


def _node_scheme(damon_node: dict[str, Any] | None) -> dict[str, Any]:
    schemes = ((damon_node or {}).get("status") or {}).get("schemes") or []
    return next((s for s in schemes if s.get("name") == SCHEME), {})


def _applied_bytes(node_scheme: dict[str, Any]) -> int:
    return sum(int(s.get("appliedBytes", 0)) for s in node_scheme.get("stats") or [])


def _share_of(placement: dict[str, int], node: int) -> float:
    total = sum(placement.values())
    return placement.get(str(node), 0) / total if total else 0.0


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


def make_pod(kubectl: Kubectl, instance: str, node: str) -> PodRef:
    """A namespace and a pod bound to the guest node (no kubelet runs it: the guest makes
    its cgroups, named by the uid the apiserver gave it)."""
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
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "workload", "namespace": namespace, "labels": POD_LABELS},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "app"}],
        },
    }
    kubectl.apply(pod)
    uid = kubectl.json("pod", "workload", "-n", namespace)["metadata"]["uid"]
    return PodRef(namespace, "workload", uid, uuid.uuid4().hex + uuid.uuid4().hex)


def remove_pod(kubectl: Kubectl, pod: PodRef) -> None:
    strip = '{"metadata":{"finalizers":null}}'
    ref = pod.scheme_ref()
    kubectl("patch", *ref, "--type=merge", "-p", strip, check=False)
    kubectl("delete", *ref, "--ignore-not-found", "--wait=false", check=False)
    # No kubelet confirms the pod's end: force it. The namespace then stays Terminating
    # (no namespace controller runs here), as the other suites' namespaces do.
    kubectl(
        "delete",
        "pod",
        pod.name,
        "-n",
        pod.namespace,
        "--force",
        "--grace-period=0",
        "--ignore-not-found",
        check=False,
    )
    kubectl("delete", "namespace", pod.namespace, "--wait=false", check=False)


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
    pod = make_pod(kubectl, instance, node) if target == "pod" else None
    params: dict[str, Any] = {
        "node": node,
        "hot_mib": HOT_MIB,
        "cold_mib": COLD_MIB,
        "status_interval_s": 3,
        "watch_limit_s": WATCH_LIMIT_S,
        "teardown_limit_s": TEARDOWN_LIMIT_S,
    }
    if pod is not None:
        params["pod"] = {"uid": pod.uid, "container_id": pod.container_id}
    work_dir = Path(tempfile.mkdtemp(prefix="cluster-", dir=vm.work_dir))
    share = GuestShare(work_dir)
    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    booting = pool.submit(
        harness.boot_python,
        (harness.SCENARIOS / "cluster_agent.py").read_text(),
        config=VM,
        files={"params.json": json.dumps(params), "kubeconfig": guest_kubeconfig(kubeconfig)},
        assets=vm.assets,
        work_dir=work_dir,
    )
    figures: dict[str, Any] = {}
    try:
        figures = _drive_cluster(kubectl, node, instance, label, pod, share, booting, started)
    finally:
        share.teardown()
        if pod is not None:
            remove_pod(kubectl, pod)
        try:
            run = booting.result(timeout=VM.host_deadline_s + 30)
        finally:
            pool.shutdown(wait=False)
            vm_figures.record(**figures)
    vm_figures.record_run(run)
    agent_log = run.text("agent.log") if run.path("agent.log").exists() else ""
    run.check()
    result = run.json()
    samples = result["samples"]
    dram, cxl = result["dram"], result["cxl"]
    hot_on_dram = [round(_share_of(s["hot"], dram), 3) for s in samples]
    cold_on_cxl = [round(_share_of(s["cold"], cxl), 3) for s in samples]
    kdamond_from = next((s["t"] for s in samples if s["kdamonds"]), None)
    hot_from = next((s["t"] for s, h in zip(samples, hot_on_dram, strict=True) if h >= 0.7), None)
    vm_figures.record(
        guest_kdamond_started_s=kdamond_from,
        guest_hot_70pct_s=hot_from,
        hot_on_node0=[(s["t"], h) for s, h in zip(samples, hot_on_dram, strict=True)][::3],
        cold_on_node1_min=min(cold_on_cxl),
        cold_on_node1_last=cold_on_cxl[-1],
        kdamonds=[s["kdamonds"] for s in samples],
        kdamonds_gone_s=result["kdamonds_gone_s"],
        kdamond_schemes=result.get("kdamond_schemes"),
        teardown_seen_s=result["teardown_seen_s"],
        test_s=round(time.monotonic() - started, 1),
    )
    tail = agent_log[-3000:]
    assert (dram, cxl) == (0, 1)
    # The workload started on the CXL node, and the cluster's scheme moved it.
    assert _share_of(samples[0]["hot"], cxl) >= 0.95, samples[0]
    assert max(s["kdamonds"] for s in samples) == 1, tail
    before_teardown = [
        h
        for s, h in zip(samples, hot_on_dram, strict=True)
        if result["teardown_seen_s"] is None or s["t"] < result["teardown_seen_s"]
    ]
    assert before_teardown[-1] >= 0.7, hot_on_dram
    assert cold_on_cxl[-1] >= 0.9, cold_on_cxl
    assert samples[-1]["loops"] > samples[0]["loops"]
    # Deleting the scheme on the host turned the guest's kdamond off while the agent ran.
    assert result["agent_running_at_end"], tail
    assert result["kdamonds_gone_s"] is not None, (result["kdamonds"], tail)
    assert result["nr_kdamonds_after_agent"] == 0
    assert result["agent_rc"] == 0, tail
    if pod is not None:
        # The decoy's hot pages are as hot as the pod's, but not the pod's: they stay.
        decoy_on_cxl = [round(_share_of(s["decoy_hot"], cxl), 3) for s in samples]
        vm_figures.record(decoy_hot_on_node1_min=min(decoy_on_cxl))
        assert min(decoy_on_cxl) >= 0.95, decoy_on_cxl


def _drive_cluster(
    kubectl: Kubectl,
    node: str,
    instance: str,
    label: str,
    pod: PodRef | None,
    share: GuestShare,
    booting: concurrent.futures.Future[harness.GuestRun],
    started: float,
) -> dict[str, Any]:
    """Apply, wait for Ready and applied bytes and settled pages, delete; return figures."""

    def guest_alive() -> None:
        if booting.done():
            run = booting.result()  # raises the boot's error, if any
            pytest.fail(f"the guest ended before the test did:\n{run.describe()}")

    # Apply once the guest's workload sits on node 1 (its first sample is out): the boot
    # may first wait for another process's guest (harness.BOOT_LOCK), which must not eat
    # the time the cluster gets to act.
    def first_sample() -> dict[str, Any]:
        guest_alive()
        return share.progress()

    _wait_for(
        first_sample,
        timeout=VM.deadline_s + 2 * VM.margin_s,
        what="the guest's first sample (workload started on node 1)",
    )
    guest_started = time.monotonic()
    kubectl.apply(tiering_scheme(instance, label, pod))
    scheme_ref = ("clusterdamonscheme", SCHEME) if pod is None else pod.scheme_ref()
    applied_at = time.monotonic()

    def ready_and_applied() -> tuple[dict[str, Any], dict[str, Any]] | None:
        guest_alive()
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
            "kdamond_schemes": share.progress().get("kdamond_schemes"),
        },
    )
    assert found is not None
    scheme, per_node = found
    ready_s = round(time.monotonic() - applied_at, 1)

    def hot_settled() -> bool:
        guest_alive()
        progress = share.progress()
        recent = progress.get("samples", [])[-3:]
        dram = progress.get("dram", 0)
        return len(recent) == 3 and all(_share_of(s["hot"], dram) >= 0.9 for s in recent)

    deadline = applied_at + SETTLE_LIMIT_S
    while time.monotonic() < deadline and not hot_settled():
        time.sleep(1.0)
    settled_s = round(time.monotonic() - applied_at, 1)
    scheme = kubectl.get(*scheme_ref) or scheme
    per_node = _node_scheme(kubectl.get("damonnode", node)) or per_node
    status = scheme.get("status") or {}
    figures = {
        "submit_to_first_sample_s": round(guest_started - started, 1),
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
