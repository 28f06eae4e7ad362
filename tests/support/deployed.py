"""The user's path on a real node: the image, ``helm install``, schemes applied with kubectl.

``Deployment`` drives what a cluster admin does, against the host's control plane and a
VM guest that is a real node of it (``vm_node.VmNode``: kubelet and containerd), with the
images ``scripts/build-images.sh`` builds from the project's Dockerfile:

- ``install``: ``helm install`` of helm/damon-k8s (Helm's own engine, helm-sdkpy, as
  tests/helm uses) with the test image; the operator and the agent run as pods with the
  chart's own securityContext, mounts and probes;
- ``deploy_workloads``: the workload image as Deployments in a namespace of their own;
- ``apply`` of an example, edited only where a test must (a shorter age, a name of its
  own, the instance label);
- ``probe``: what the guest sees (tests/support/node_probe.py): the workloads' pages per
  NUMA node and their pods' memory cgroups, the kdamonds, the agent's CPU and RSS;
- ``uninstall``, and ``PodWatch``: when each pod of the release reached each stage of its
  life, to show where a slow step's time went.

Two settings differ from a default install, each for this test bed's sake:

- ``webhook.enable=false``: the host's apiserver cannot reach a pod in the guest (QEMU's
  user networking routes only from the guest out), so admission calls would only time
  out; the chart's webhook is tested in tests/helm and tests/kube;
- ``operator.instance``: the control plane is shared with other tests (and other
  sessions' runs), whose schemes an operator managing every object would also assign to
  this real node. With an instance, the operator acts only on the labelled node and
  schemes.

Everything raises ``DeployError`` (no pytest), so scripts/vm-node uses it too.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import harness
import helm_sdkpy
import vm_node
import yaml

from damon_operator import release

REPO = harness.REPO_ROOT
CHART = REPO / "helm" / "damon-k8s"
EXAMPLES = REPO / "examples"
BUILD_IMAGES = REPO / "scripts" / "build-images.sh"
PROBE = REPO / "tests" / "support" / "node_probe.py"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
# At most one probe (a /proc walk and a move_pages query per workload in the guest) per
# this many seconds: the waits poll every second, and the node's CPU is for its pods.
PROBE_EVERY_S = 3.0
EMULATED_CPU_REQUEST = "200m"
PROJECT_IMAGE = ("localhost/damon-k8s", "test")
WORKLOAD_IMAGE = "localhost/damon-k8s-workload:test"
INSTANCE_LABEL = "damon.io/instance"
MIB = 1 << 20
# The uninstall hook Job's deadline here (the chart's default is 300 s); helm uninstall waits
# a minute more.
HOOK_DEADLINE_S = 600

T = TypeVar("T")


class DeployError(Exception):
    """A step of the user's path did not do what it should."""


def build_images(timeout: float = 3600) -> dict[str, dict[str, Any]]:
    """The project's and the workload's images (scripts/build-images.sh; cached), as its
    record: key -> name, archive, size, archive_size, build_seconds."""
    done = subprocess.run(
        [str(BUILD_IMAGES)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise DeployError(f"scripts/build-images.sh failed ({done.returncode}):\n{tail}")
    record: dict[str, dict[str, Any]] = json.loads(
        (harness.cache_dir() / "images" / "images.json").read_text()
    )
    return record


def image_dirs() -> list[Path]:
    return [harness.cache_dir() / "images" / "node"]


@dataclass(frozen=True)
class Workload:
    """A Deployment of the workload image: ``hot_mib`` touched all the time, ``cold_mib``
    touched once; ``numa_node`` binds where its memory starts."""

    app: str
    replicas: int = 1
    hot_mib: int = 32
    cold_mib: int = 96
    numa_node: int | None = None

    def manifest(self, namespace: str, node: str) -> dict[str, Any]:
        args = [
            f"--hot-mib={self.hot_mib}",
            f"--cold-mib={self.cold_mib}",
            "--status=/tmp/workload.json",
            "--pause-s=0.01",
        ]
        if self.numa_node is not None:
            args.append(f"--node={self.numa_node}")
        labels = {"app": self.app}
        footprint = self.hot_mib + self.cold_mib
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.app, "namespace": namespace},
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": self.app,
                                "image": WORKLOAD_IMAGE,
                                "imagePullPolicy": "Never",
                                "args": args,
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": f"{footprint + 48}Mi"},
                                    "limits": {"memory": f"{footprint + 160}Mi"},
                                },
                                "securityContext": {
                                    "readOnlyRootFilesystem": True,
                                    "allowPrivilegeEscalation": False,
                                },
                                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                            }
                        ],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        }


@dataclass
class Seen:
    """One probe of the guest (tests/support/node_probe.py), by pod UID."""

    workloads: dict[str, dict[str, Any]]
    kdamonds: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    cpu: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    def pages(self, pod_uid: str, array: str) -> dict[int, int]:
        """Pages of the pod's hot or cold array per NUMA node (negative: not present)."""
        found = self.workloads.get(pod_uid)
        if found is None:
            return {}
        return {int(node): count for node, count in found[array].items()}

    def share(self, pod_uid: str, array: str, where: Callable[[int], bool]) -> float:
        pages = self.pages(pod_uid, array)
        total = sum(pages.values())
        return sum(c for n, c in pages.items() if where(n)) / total if total else 0.0

    def running_kdamonds(self) -> dict[int, int]:
        """index -> pid of the kdamonds that are on."""
        return {k["index"]: k["pid"] for k in self.kdamonds if k["state"] == "on"}

    def cpu_since(self, earlier: Seen) -> dict[str, float]:
        """Where the guest's CPU went between two probes, in % of all its vCPUs' time: busy
        in all, and the workloads' and the kdamonds' parts of it (same processes and
        threads in both probes, or the figure means little)."""
        total = self.cpu["all_s"] - earlier.cpu["all_s"]

        def percent(seconds: float) -> float:
            return round(100 * seconds / total, 1) if total else 0.0

        def part(key: str) -> float:
            return percent(self.cpu[key] - earlier.cpu[key])

        return {"busy": part("busy_s"), "workloads": part("workloads_s"),
                "kdamonds": part("kdamonds_s")}  # fmt: skip

    def top_commands(self, earlier: Seen, count: int = 4) -> list[tuple[str, float]]:
        """The processes (by command name) that used most of the guest's CPU between two
        probes, in % of all its vCPUs' time (processes that ended between them are lost)."""
        total = self.cpu["all_s"] - earlier.cpu["all_s"]
        then = earlier.cpu.get("by_command", {})
        used = {
            name: seconds - then.get(name, 0.0)
            for name, seconds in self.cpu.get("by_command", {}).items()
        }
        ranked = sorted(used.items(), key=lambda item: -item[1])[:count]
        return [(name, round(100 * seconds / total, 1)) for name, seconds in ranked if total]


class Deployment:
    """One release of the chart on one VM node, and the namespace its workloads run in."""

    def __init__(
        self,
        *,
        node: vm_node.VmNode,
        kubeconfig: Path,
        instance: str,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.node = node
        self.kubeconfig = kubeconfig
        self.instance = instance
        self.say = say
        self.started = time.monotonic()
        # Per probe (s since this object was made, the guest's CPU since the probe before:
        # busy and parts, and the top processes).
        self.cpu_timeline: list[tuple[float, dict[str, float], list[tuple[str, float]]]] = []
        self._last_seen: Seen | None = None
        self._last_probe: float | None = None
        self._probe_started = False
        suffix = uuid.uuid4().hex[:6]
        self.release = f"dk{suffix}"
        self.system_namespace = f"damon-system-{suffix}"
        self.namespace = f"shop-{suffix}"
        self.suffix = suffix
        self.installed = False
        self.cluster_schemes: list[str] = []

    # --- kubectl and helm ------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        done = self.node.kubectl(*args, input=input)
        if check and done.returncode != 0:
            raise DeployError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def get(self, *args: str) -> dict[str, Any] | None:
        """``kubectl get ... -o json``, or None when absent or the apiserver is away."""
        done = self.node.kubectl("get", *args, "-o", "json")
        if done.returncode != 0:
            return None
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def _helm(self) -> Any:
        return helm_sdkpy.Configuration(
            namespace=self.system_namespace, kubeconfig=str(self.kubeconfig)
        )

    def values(self) -> dict[str, Any]:
        on_this_node = {"kubernetes.io/hostname": self.node.name}
        # CPU requests sized for this emulated node, as a user sizes them for theirs: the
        # chart's (agent 20m, operator 50m) are for hardware, and here every instruction
        # costs tens of times more (the agent measured 17-22 % of one vCPU). A pod's CPU
        # weight follows its request, and the four workloads (10m each) spin without a
        # pause: at 20m a successor agent took 82 s to import what takes 0.9 s on the host,
        # and 97 s from Running to Ready; at 200m, 35-45 s (2026-12-04).
        emulated = {"resources": {"requests": {"cpu": EMULATED_CPU_REQUEST}}}
        return {
            "image": {
                "repository": PROJECT_IMAGE[0],
                "tag": PROJECT_IMAGE[1],
                "pullPolicy": "Never",
            },
            "webhook": {"enable": False},
            "operator": {
                **emulated,
                "instance": self.instance,
                "nodeSelector": on_this_node,
                # The node's busy workloads leave a starting Python image little CPU: one
                # run's hook took 290 s to start and release, and met the default 300 s.
                "releaseFinalizersDeadlineSeconds": HOOK_DEADLINE_S,
            },
            # Other Node objects on the shared control plane have no kubelet.
            "agent": {**emulated, "nodeSelector": on_this_node},
        }

    def install(self) -> None:
        # Helm creates the chart's CRDs and at once the objects of their kinds; a freshly
        # started apiserver that does not serve a new kind yet refuses them ("no matches
        # for kind ClusterKopfPeering ... ensure CRDs are installed first"). So the CRDs
        # first, until established.
        crds = str(CHART / "crds")
        self.kubectl("apply", "-f", crds)
        self.kubectl("wait", "--for=condition=established", "--timeout=50s", "-f", crds)
        self.say(f"helm install {self.release} -n {self.system_namespace}")
        action = helm_sdkpy.Install(self._helm())
        asyncio.run(
            action.run(
                self.release,
                str(CHART),
                values=self.values(),
                create_namespace=True,
                wait=False,
                timeout=120,
            )
        )
        self.installed = True

    def uninstall(self) -> None:
        self.say(f"helm uninstall {self.release}")
        # Helm waits for the pre-delete hook Job (it scales the operator to 0 and releases
        # its finalizers): an emulated node takes minutes to start a Python image.
        try:
            asyncio.run(
                helm_sdkpy.Uninstall(self._helm()).run(
                    self.release, wait=False, timeout=HOOK_DEADLINE_S + 60
                )
            )
        except helm_sdkpy.exceptions.HelmError as error:
            raise DeployError(f"helm uninstall: {error}\n{self.pod_logs()}") from error
        self.installed = False

    def discard(self) -> None:
        """The release's objects deleted without Helm. After a failed walk the node is gone,
        and ``helm uninstall`` would wait out its pre-delete hook Job, which no node is left
        to run (it hung one failed run for 11 minutes): the chart's objects carry the
        release's instance label, and the rest lives in the release's own namespace, Helm's
        record of the release included."""
        selector = f"app.kubernetes.io/instance={self.release}"
        self.say(f"discarding release {self.release} (no node left to run its hook)")
        for kind in (
            "clusterrole",
            "clusterrolebinding",
            "validatingwebhookconfiguration",
            "clusterkopfpeering",
        ):
            self.kubectl("delete", kind, "-l", selector, "--ignore-not-found", check=False)
        for kind in ("role", "rolebinding"):
            self.kubectl(
                "delete", kind, "--all-namespaces", "-l", selector, "--ignore-not-found",
                check=False,
            )  # fmt: skip
        self.kubectl(
            "delete", "namespace", self.system_namespace, "--ignore-not-found", "--wait=false",
            check=False,
        )  # fmt: skip
        self.installed = False

    @property
    def agent_daemonset(self) -> str:
        return f"{self.release}-damon-k8s-agent"

    @property
    def operator_deployment(self) -> str:
        return f"{self.release}-damon-k8s-operator"

    def release_ready(self) -> bool:
        agent = self.get("daemonset", self.agent_daemonset, "-n", self.system_namespace) or {}
        operator = (
            self.get("deployment", self.operator_deployment, "-n", self.system_namespace) or {}
        )
        agents_ready = (agent.get("status") or {}).get("numberReady", 0)
        operators_ready = (operator.get("status") or {}).get("readyReplicas", 0)
        return bool(agents_ready >= 1 and operators_ready >= 1)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = self.get("pods", "-n", namespace, "-l", selector) or {}
        return list(found.get("items") or [])

    def agent_pods(self) -> list[dict[str, Any]]:
        return self.pods(self.system_namespace, "app.kubernetes.io/component=agent")

    def damon_node(self) -> dict[str, Any] | None:
        return self.get("damonnode", self.node.name)

    # --- workloads and schemes ---------------------------------------------------------------

    def deploy_workloads(self, workloads: list[Workload]) -> None:
        if self.get("namespace", self.namespace) is None:
            self.kubectl("create", "namespace", self.namespace)
        for one in workloads:
            self.kubectl(
                "apply", "-f", "-", input=json.dumps(one.manifest(self.namespace, self.node.name))
            )

    def workload_pods(self, app: str) -> dict[str, str]:
        """Running pods of ``app``: name -> UID."""
        return {
            p["metadata"]["name"]: p["metadata"]["uid"]
            for p in self.pods(self.namespace, f"app={app}")
            if (p.get("status") or {}).get("phase") == "Running"
            and p["spec"].get("nodeName") == self.node.name
        }

    def example(self, name: str, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """examples/NAME.yaml, labelled for this instance, then ``edit``ed (the test's
        shorter ages)."""
        loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        scheme = copy.deepcopy(loaded)
        metadata = scheme["metadata"]
        metadata.setdefault("labels", {})[INSTANCE_LABEL] = self.instance
        if scheme["kind"] == "ClusterDamonScheme":
            # Cluster-scoped: a name of its own beside other runs' objects.
            metadata["name"] = f"{metadata['name']}-{self.suffix}"
            self.cluster_schemes.append(metadata["name"])
        edit(scheme)
        return scheme

    def apply(self, scheme: dict[str, Any]) -> str:
        """``kubectl apply`` (in the workloads' namespace when namespaced); kubectl's line."""
        where = [] if scheme["kind"] == "ClusterDamonScheme" else ["-n", self.namespace]
        return self.kubectl("apply", *where, "-f", "-", input=json.dumps(scheme)).strip()

    # --- the guest ---------------------------------------------------------------------------

    def probe(self) -> Seen:
        if self._last_probe is not None:
            time.sleep(max(0.0, self._last_probe + PROBE_EVERY_S - time.monotonic()))
        self._last_probe = time.monotonic()
        parsed = self._ask_probe()
        seen = Seen(
            workloads={w["pod_uid"]: w for w in parsed["workloads"] if w["pod_uid"]},
            kdamonds=parsed["kdamonds"],
            agents=parsed["agents"],
            cpu=parsed["cpu"],
            memory=parsed.get("memory") or {},
        )
        earlier = self._last_seen
        if earlier is None or seen.at - earlier.at >= 5:  # shorter spans: too few ticks
            if earlier is not None:
                moment = round(seen.at - self.started)
                self.cpu_timeline.append(
                    (moment, seen.cpu_since(earlier), seen.top_commands(earlier))
                )
            self._last_seen = seen
        return seen

    def _ask_probe(self, timeout: float = 120) -> dict[str, Any]:
        """One document of the guest's probe server (node_probe.py --serve), started on
        the first call: a request file in the share, answered in another."""
        share = self.node.share
        if share is None:
            raise DeployError("the node has no share: is it up?")
        directory = share / "probe"
        if not self._probe_started:
            directory.mkdir(exist_ok=True)
            in_guest = f"{harness.SHARE_IN_GUEST}/probe"
            started = self.node.exec(
                f'nohup "{VENV_PYTHON}" "{PROBE}" --serve {in_guest} '
                f">{in_guest}/server.log 2>&1 </dev/null &"
            )
            if started.rc != 0:
                raise DeployError(f"the guest's probe did not start: {started.output[-2000:]}")
            self._probe_started = True
        asked = uuid.uuid4().hex
        (directory / "request.part").write_text(asked)
        (directory / "request.part").rename(directory / "request")
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = json.loads((directory / "answer").read_text())
            except (OSError, ValueError):
                answer = {}
            if answer.get("id") == asked:
                return dict(answer["document"])
            self.node.check_alive()
            if time.monotonic() > deadline:
                log = directory / "server.log"
                said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise DeployError(f"the guest's probe did not answer in {timeout:.0f} s:\n{said}")
            time.sleep(0.2)

    def wait_for(self, what: str, predicate: Callable[[], T | None], timeout: float) -> T:
        """Poll ``predicate`` (every second or so) until it gives something truthy."""
        began = time.monotonic()
        deadline = began + timeout
        self.say(f"waiting for {what}")
        while True:
            self.node.check_alive()
            found = predicate()
            if found:
                self.say(f"... {what}: {time.monotonic() - began:.1f} s")
                return found
            if time.monotonic() > deadline:
                raise DeployError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(1.0)

    def pod_logs(self, tail: int = 60) -> str:
        """The operator's and agents' logs, from the guest (``kubectl logs`` cannot reach
        the guest's kubelet)."""
        lines = []
        for pod in self.pods(self.system_namespace, "app.kubernetes.io/name=damon-k8s"):
            name = pod["metadata"]["name"]
            container = pod["spec"]["containers"][0]["name"]
            try:
                text = self.node.pod_log(self.system_namespace, name, container, tail)
            except vm_node.NodeError as error:
                text = str(error)
            lines.append(f"--- {name} ---\n{text}")
        return "\n".join(lines)

    def cleanup(self) -> None:
        """Whatever is left: the release, the namespaces, this run's cluster schemes (their
        finalizer removed once no operator of this instance is left to do it)."""
        if self.installed:
            self.discard()
        for name in self.cluster_schemes:
            self.kubectl(
                "patch",
                "clusterdamonscheme",
                name,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
            self.kubectl(
                "delete",
                "clusterdamonscheme",
                name,
                "--ignore-not-found",
                "--wait=false",
                check=False,
            )
        for namespace in (self.namespace, self.system_namespace):
            found = self.get("damonschemes", "-n", namespace) or {}
            for item in found.get("items") or []:
                self.kubectl(
                    "patch",
                    "damonscheme",
                    item["metadata"]["name"],
                    "-n",
                    namespace,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )
            self.kubectl(
                "delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False
            )
        self.kubectl(
            "delete", "damonnode", self.node.name, "--ignore-not-found", "--wait=false", check=False
        )


class PodWatch:
    """When each pod of the release's namespace reached each stage of its life, polled
    from the host about every second on a thread while a step runs (``with PodWatch(d) as
    watch:``). ``milestones``: ``"COMPONENT STAGE"`` (the pod's
    ``app.kubernetes.io/component``) -> seconds since the watch began, the first time seen:
    ``seen``, ``running``, ``marked`` (for deletion), ``terminated`` (every container,
    ``release.stopped``), ``succeeded``, ``gone``. ``logs``: the container log of each pod
    of ``log_components`` once it has stopped (kubelet drops it with the pod, and Helm
    deletes its hook's pod as soon as it succeeds), each line stamped by containerd."""

    def __init__(self, deployment: Deployment, log_components: tuple[str, ...] = ()) -> None:
        self.deployment = deployment
        self.log_components = log_components
        self.milestones: dict[str, float] = {}
        self.logs: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self._began = 0.0

    def __enter__(self) -> PodWatch:
        self._began = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _mark(self, component: str, stage: str) -> None:
        self.milestones.setdefault(f"{component} {stage}", round(time.monotonic() - self._began, 1))

    def _run(self) -> None:
        seen: dict[str, str] = {}  # pod name -> component
        namespace = self.deployment.system_namespace
        while not self._stop.is_set():
            try:
                pods = self.deployment.pods(namespace, "app.kubernetes.io/component")
            except (DeployError, subprocess.SubprocessError, OSError):
                pods = None  # a poll lost: the next one tells
            if pods is not None:
                present = set()
                for pod in pods:
                    name = pod["metadata"]["name"]
                    component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
                    present.add(name)
                    seen[name] = component
                    self._mark(component, "seen")
                    phase = (pod.get("status") or {}).get("phase")
                    if phase == "Running":
                        self._mark(component, "running")
                    if pod["metadata"].get("deletionTimestamp"):
                        self._mark(component, "marked")
                    stopped = release.stopped(pod)
                    if stopped:
                        self._mark(component, "terminated")
                    if phase == "Succeeded":
                        self._mark(component, "succeeded")
                    ended = stopped or phase in ("Succeeded", "Failed")
                    if ended and component in self.log_components and name not in self.logs:
                        self._keep_log(pod)
                for name, component in seen.items():
                    if name not in present:
                        self._mark(component, "gone")
            self._stop.wait(1.0)

    def _keep_log(self, pod: dict[str, Any]) -> None:
        name, container = pod["metadata"]["name"], pod["spec"]["containers"][0]["name"]
        try:
            self.logs[name] = self.deployment.node.pod_log(
                self.deployment.system_namespace, name, container, tail=100
            )
        except vm_node.NodeError as error:
            self.logs[name] = str(error)


def condition(obj: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for found in ((obj or {}).get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return None
