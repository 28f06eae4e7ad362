"""The operator at scale, against the real kube-apiserver: latency, cost, write rate.

Setup: N Node objects (1,000; ``--quick``: 100) and one ClusterDamonScheme targeting all of
them, all labelled with a fresh instance id; the real operator (``damon-operator
--instance ID --standalone``, a subprocess) creates the N DamonNodes and assigns the
scheme. A load generator then plays the N agents: it writes each DamonNode's status (the
scheme Ready, growing byte counters, a fresh heartbeat) once per ``--heartbeat`` seconds
per node (10 s, the agents' default status interval), spread evenly, from a bounded pool
of writer threads.

Measured:

* fan-out: time until the operator created every DamonNode with the scheme in its spec,
  and until the scheme is Ready with all N nodes after the first reports;
* steady state (``--steady`` seconds under the heartbeat load, nothing failing): the
  operator's API writes, counted from two watches — every change of the scheme's status
  (only the operator writes it) and every DamonNode generation bump (a spec write; status
  writes do not bump it) — per node per minute; the operator's CPU (utime+stime from
  /proc/PID/stat over the window) and memory (VmRSS, VmHWM from /proc/PID/status).
  Changes of the scheme's metadata alone are shown apart and not counted: on a control
  plane shared with other test sessions, their operators (other ``--instance``) see the
  scheme too, and kopf in them strips the ``damon.io/teardown`` finalizer that no handler
  of theirs claims, which this operator then puts back;
* reaction latency (``--trials`` times, under the same load): a random node's agent
  reports the scheme failing, then recovered; each time, from sending that status write
  until the scheme's status says so (the node listed in ``failingNodes`` with Degraded
  true; then Ready true again), seen on a watch of the scheme. p50 and p99 over all
  samples.

Targets: p99 <= 5 s; the operator's steady-state writes <= 1 per node per 10 s (6 per
node per minute). The agents' own status writes are shown beside them: they are the
generator's, fixed by ``--heartbeat``.

    .venv/bin/python bench/operator_scale.py --quick     # 100 nodes, < 1 minute
    .venv/bin/python bench/operator_scale.py             # 1,000 nodes, a few minutes

The control plane is scripts/controlplane.sh's (reused when running). Everything the run
creates is deleted at the end. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "controlplane.sh"
GROUP, VERSION = "damon.io", "v1alpha1"
INSTANCE_LABEL = "damon.io/instance"
SCHEME = "scale"
SCHEME_KEY_KIND = "ClusterDamonScheme"
LATENCY_TARGET_S = 5.0
WRITES_PER_NODE_MIN_TARGET = 6.0
JSON_PATCH = "application/json-patch+json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------
# Control plane and cluster objects


@contextlib.contextmanager
def control_plane() -> Iterator[Path]:
    """The kubeconfig of a running control plane (started if needed), held meanwhile."""

    def script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    # Held even when it runs already: the control plane is shared, and the last holder to
    # release it stops it (a test session ending mid-run did so under an unheld bench).
    holder = str(os.getpid())
    started = script("start", "--holder", holder, timeout=240)
    if started.returncode != 0:
        raise SystemExit(f"control plane did not start:\n{started.stderr}")
    try:
        yield Path(started.stdout.strip().splitlines()[-1])
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            script("release", holder, timeout=60)


def install_crds(kubeconfig: Path) -> None:
    crds = str(ROOT / "crds")
    base = ["kubectl", "--kubeconfig", str(kubeconfig)]
    subprocess.run([*base, "apply", "-f", crds], check=True, capture_output=True, timeout=60)
    names = subprocess.run(
        [*base, "get", "-f", crds, "-o", "name"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    subprocess.run(
        [*base, "wait", "--for=condition=Established", "--timeout=60s", *names],
        check=True,
        capture_output=True,
        timeout=90,
    )


def api_client(kubeconfig: Path, pool: int) -> Any:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    configuration.connection_pool_maxsize = pool
    return kubernetes.client.ApiClient(configuration)


def parallel(workers: int, jobs: list[Callable[[], object]]) -> None:
    with futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for done in futures.as_completed([pool.submit(job) for job in jobs]):
            done.result()


def scheme_body(instance: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": SCHEME_KEY_KIND,
        "metadata": {"name": f"{SCHEME}-{instance}", "labels": {INSTANCE_LABEL: instance}},
        "spec": {
            "wholeNode": True,
            "nodeSelector": {"matchLabels": {INSTANCE_LABEL: instance}},
            "monitoring": {"mode": "paddr"},
            "schemes": [{"name": "count", "action": "stat"}],
        },
    }


# ---------------------------------------------------------------------------------------
# Watches: the scheme's statuses (with arrival times) and the operator's writes


@dataclass
class Observed:
    """What the watches saw; guarded by ``changed``."""

    changed: threading.Condition = field(default_factory=threading.Condition)
    scheme: dict[str, Any] = field(default_factory=dict)
    scheme_writes: int = 0  # the scheme's status changed
    metadata_writes: int = 0  # only its metadata changed (finalizers, annotations)
    spec_writes: int = 0
    status_writes: int = 0
    generations: dict[str, int] = field(default_factory=dict)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> float | None:
        """Block until ``predicate(scheme)`` holds; the monotonic time it was seen, or None."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.scheme):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)
            return time.monotonic()

    def writes(self) -> tuple[int, int, int]:
        with self.changed:
            return self.scheme_writes, self.spec_writes, self.metadata_writes


def watch_forever(
    stop: threading.Event, list_call: Callable[..., Any], on_event: Callable[[str, Any], None]
) -> None:
    while not stop.is_set():
        watcher = kubernetes.watch.Watch()
        try:
            for event in watcher.stream(list_call, timeout_seconds=30):
                on_event(event["type"], event["object"])
                if stop.is_set():
                    break
        except Exception as err:  # a dropped watch is restarted; the bench goes on
            if not stop.is_set():
                log(f"watch restarted: {err}")
                time.sleep(0.5)
        finally:
            watcher.stop()


def start_watches(client: Any, instance: str, observed: Observed, stop: threading.Event) -> None:
    custom = kubernetes.client.CustomObjectsApi(client)
    selector = f"{INSTANCE_LABEL}={instance}"

    def scheme_event(kind: str, obj: Any) -> None:
        with observed.changed:
            if kind == "MODIFIED":
                if obj.get("status") != observed.scheme.get("status"):
                    observed.scheme_writes += 1
                else:
                    observed.metadata_writes += 1
            observed.scheme = obj
            observed.changed.notify_all()

    def node_event(kind: str, obj: Any) -> None:
        name, generation = obj["metadata"]["name"], int(obj["metadata"].get("generation", 0))
        with observed.changed:
            before = observed.generations.get(name)
            if kind == "MODIFIED" and before is not None:
                if generation > before:
                    observed.spec_writes += 1
                else:
                    observed.status_writes += 1
            observed.generations[name] = generation

    def lister(plural: str) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            return custom.list_cluster_custom_object(
                GROUP, VERSION, plural, label_selector=selector, **kwargs
            )

        return call

    for plural, handler in (("clusterdamonschemes", scheme_event), ("damonnodes", node_event)):
        threading.Thread(
            target=watch_forever, args=(stop, lister(plural), handler), daemon=True
        ).start()


# ---------------------------------------------------------------------------------------
# The simulated agents


class Agents:
    """Writes DamonNode statuses as N agents would, at a bounded rate."""

    def __init__(self, client: Any, nodes: list[str], workers: int) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.nodes = nodes
        self.workers = workers
        self.failing: set[str] = set()
        self.tried: dict[str, int] = dict.fromkeys(nodes, 0)
        self.scheme: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.writes = 0
        self.errors = 0

    def status(self, node: str) -> dict[str, Any]:
        meta = self.scheme["metadata"]
        with self.lock:
            failing = node in self.failing
            self.tried[node] += 4096 * random.randint(1, 256)
            tried = self.tried[node]
        ready = {
            "type": "Ready",
            "status": "False" if failing else "True",
            "reason": "BenchFailure" if failing else "Running",
            "message": "injected by the benchmark" if failing else "running",
            "lastTransitionTime": _now(),
            "observedGeneration": meta["generation"],
        }
        return {
            "heartbeat": _now(),
            "backend": "sim",
            "numa": [{"nid": 0, "tier": "dram", "hasCpus": True}],
            "schemes": [
                {
                    "kind": SCHEME_KEY_KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "observedGeneration": meta["generation"],
                    "conditions": [ready],
                    "targets": 1,
                    "stats": [{"name": "count", "nrTried": tried // 4096, "triedBytes": tried}],
                }
            ],
        }

    def report(self, node: str) -> None:
        try:
            self.custom.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                "damonnodes",
                node,
                [{"op": "add", "path": "/status", "value": self.status(node)}],
                _content_type=JSON_PATCH,
            )
        except kubernetes.client.ApiException as err:
            with self.lock:
                self.errors += 1
            log(f"status write for {node} failed: {err.status} {err.reason}")
            return
        with self.lock:
            self.writes += 1

    def report_all(self) -> None:
        parallel(self.workers, [lambda n=n: self.report(n) for n in self.nodes])

    def heartbeat_loop(self, interval_s: float, stop: threading.Event) -> None:
        """Each node once per ``interval_s``, evenly spread; never more than the pool."""
        spacing = interval_s / len(self.nodes)
        with futures.ThreadPoolExecutor(max_workers=self.workers) as pool:
            pending: set[futures.Future[None]] = set()
            next_at = time.monotonic()
            while not stop.is_set():
                for node in self.nodes:
                    if stop.is_set():
                        break
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        stop.wait(delay)
                    next_at += spacing
                    # Bounded: when the writers fall behind, wait instead of queueing more.
                    while len(pending) >= self.workers * 2:
                        _, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                    pending.add(pool.submit(self.report, node))
            futures.wait(pending)


# ---------------------------------------------------------------------------------------
# The operator process


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_mib(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def start_operator(kubeconfig: Path, instance: str, log_path: Path) -> subprocess.Popen[bytes]:
    executable = Path(sys.executable).parent / "damon-operator"
    command = [str(executable), "--instance", instance, "--standalone", "--log-format", "plain"]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with log_path.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


# ---------------------------------------------------------------------------------------
# The run


@dataclass
class Results:
    nodes: int
    heartbeat_s: float
    fanout_s: float = 0.0
    ready_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    timeouts: int = 0
    steady_s: float = 0.0
    operator_writes: int = 0
    scheme_writes: int = 0
    metadata_writes: int = 0
    agent_writes: int = 0
    cpu_percent: float = 0.0
    rss_mib: float = 0.0
    peak_mib: float = 0.0
    write_errors: int = 0


def _failing_listed(node: str) -> Callable[[dict[str, Any]], bool]:
    def check(scheme: dict[str, Any]) -> bool:
        status = scheme.get("status") or {}
        failing = {f.get("node") for f in status.get("failingNodes") or []}
        degraded = any(
            c.get("type") == "Degraded" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return node in failing and degraded

    return check


def _all_ready(count: int) -> Callable[[dict[str, Any]], bool]:
    def check(scheme: dict[str, Any]) -> bool:
        status = scheme.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return ready and status.get("nodesReady") == f"{count}/{count}"

    return check


def run(args: argparse.Namespace, kubeconfig: Path, workdir: Path) -> Results:
    instance = f"scale{uuid.uuid4().hex[:6]}"
    nodes = [f"{instance}-n{i:04d}" for i in range(args.nodes)]
    results = Results(nodes=args.nodes, heartbeat_s=args.heartbeat)
    client = api_client(kubeconfig, pool=args.workers * 2 + 4)
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    stop = threading.Event()
    observed = Observed()
    operator: subprocess.Popen[bytes] | None = None
    scheme_name = f"{SCHEME}-{instance}"
    try:
        log(f"creating {len(nodes)} Nodes (instance {instance})")
        labels = {INSTANCE_LABEL: instance}
        parallel(
            args.workers,
            [
                lambda n=n: core.create_node({"metadata": {"name": n, "labels": labels}})
                for n in nodes
            ],
        )
        start_watches(client, instance, observed, stop)
        custom.create_cluster_custom_object(
            GROUP, VERSION, "clusterdamonschemes", scheme_body(instance)
        )
        operator = start_operator(kubeconfig, instance, workdir / "operator.log")
        started = time.monotonic()
        log(f"operator pid {operator.pid}; waiting for {len(nodes)} DamonNodes")
        while True:
            listed = custom.list_cluster_custom_object(
                GROUP, VERSION, "damonnodes", label_selector=f"{INSTANCE_LABEL}={instance}"
            )["items"]
            assigned = sum(1 for d in listed if (d.get("spec") or {}).get("schemes"))
            if assigned == len(nodes):
                break
            if operator.poll() is not None or time.monotonic() - started > args.timeout:
                raise SystemExit(
                    f"the operator assigned {assigned}/{len(nodes)} nodes; see "
                    f"{workdir / 'operator.log'}"
                )
            time.sleep(0.5)
        results.fanout_s = time.monotonic() - started

        agents = Agents(client, nodes, args.workers)
        agents.scheme = custom.get_cluster_custom_object(
            GROUP, VERSION, "clusterdamonschemes", scheme_name
        )
        log("first reports from every simulated agent")
        reported = time.monotonic()
        agents.report_all()
        seen = observed.wait(_all_ready(len(nodes)), args.timeout)
        if seen is None:
            raise SystemExit(f"the scheme did not become Ready {len(nodes)}/{len(nodes)}")
        results.ready_s = seen - reported

        heartbeats = threading.Thread(
            target=agents.heartbeat_loop, args=(args.heartbeat, stop), daemon=True
        )
        heartbeats.start()
        log(f"steady state for {args.steady:.0f} s (a heartbeat per node every {args.heartbeat} s)")
        time.sleep(min(args.heartbeat, 5.0))  # let the load reach its rate first
        writes_before, specs_before, metadata_before = observed.writes()
        agent_writes_before = agents.writes
        cpu_before, window_start = proc_cpu_s(operator.pid), time.monotonic()
        time.sleep(args.steady)
        cpu_after, window_end = proc_cpu_s(operator.pid), time.monotonic()
        writes_after, specs_after, metadata_after = observed.writes()
        results.steady_s = window_end - window_start
        results.scheme_writes = writes_after - writes_before
        results.metadata_writes = metadata_after - metadata_before
        results.operator_writes = results.scheme_writes + (specs_after - specs_before)
        results.agent_writes = agents.writes - agent_writes_before
        results.cpu_percent = 100 * (cpu_after - cpu_before) / results.steady_s

        log(f"{args.trials} failure/recovery trials under the same load")
        for _ in range(args.trials):
            node = random.choice(nodes)
            with agents.lock:
                agents.failing.add(node)
            sent = time.monotonic()
            agents.report(node)
            seen = observed.wait(_failing_listed(node), args.trial_timeout)
            if seen is None:
                results.timeouts += 1
            else:
                results.latencies_s.append(seen - sent)
            with agents.lock:
                agents.failing.discard(node)
            sent = time.monotonic()
            agents.report(node)
            seen = observed.wait(_all_ready(len(nodes)), args.trial_timeout)
            if seen is None:
                results.timeouts += 1
            else:
                results.latencies_s.append(seen - sent)
        results.rss_mib, results.peak_mib = proc_memory_mib(operator.pid)
        results.write_errors = agents.errors
        return results
    finally:
        stop.set()
        log("cleaning up")
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()
        _cleanup(custom, core, scheme_name, nodes, args.workers)
        client.close()


def _cleanup(custom: Any, core: Any, scheme_name: str, nodes: list[str], workers: int) -> None:
    def quietly(call: Callable[[], object]) -> None:
        with contextlib.suppress(kubernetes.client.ApiException):
            call()

    quietly(
        lambda: custom.patch_cluster_custom_object(
            GROUP, VERSION, "clusterdamonschemes", scheme_name, {"metadata": {"finalizers": None}}
        )
    )
    quietly(
        lambda: custom.delete_cluster_custom_object(
            GROUP, VERSION, "clusterdamonschemes", scheme_name
        )
    )
    jobs: list[Callable[[], object]] = []
    for node in nodes:
        jobs.append(lambda n=node: quietly(lambda: core.delete_node(n)))
        jobs.append(
            lambda n=node: quietly(
                lambda: custom.delete_cluster_custom_object(GROUP, VERSION, "damonnodes", n)
            )
        )
    parallel(workers, jobs)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def report(results: Results) -> bool:
    per_node_min = results.operator_writes / results.nodes / (results.steady_s / 60)
    agent_per_node_min = results.agent_writes / results.nodes / (results.steady_s / 60)
    p50 = percentile(results.latencies_s, 50)
    p99 = percentile(results.latencies_s, 99)
    latency_ok = results.timeouts == 0 and p99 <= LATENCY_TARGET_S
    writes_ok = per_node_min <= WRITES_PER_NODE_MIN_TARGET
    rows = [
        ("nodes (DamonNodes)", f"{results.nodes}", ""),
        ("fan-out: every DamonNode assigned", f"{results.fanout_s:.1f} s", ""),
        ("first reports -> scheme Ready n/n", f"{results.ready_s:.2f} s", ""),
        (
            f"status change -> condition, p50 (n={len(results.latencies_s)})",
            f"{p50:.2f} s",
            "",
        ),
        (
            "status change -> condition, p99",
            f"{p99:.2f} s" + (f" ({results.timeouts} timed out)" if results.timeouts else ""),
            f"<= {LATENCY_TARGET_S:.0f} s  {'ok' if latency_ok else 'MISSED'}",
        ),
        (
            f"operator writes / node / min (steady {results.steady_s:.0f} s)",
            f"{per_node_min:.3f} ({results.scheme_writes} scheme + "
            f"{results.operator_writes - results.scheme_writes} DamonNode spec writes)",
            f"<= {WRITES_PER_NODE_MIN_TARGET:.0f}  {'ok' if writes_ok else 'MISSED'}",
        ),
        (
            "agents' status writes / node / min (load)",
            f"{agent_per_node_min:.2f} ({results.agent_writes / results.steady_s:.0f}/s)",
            f"intended {60 / results.heartbeat_s:.2f} (--heartbeat {results.heartbeat_s:g})",
        ),
        (
            "scheme metadata-only writes (not counted)",
            f"{results.metadata_writes}",
            "finalizer removed/re-added" if results.metadata_writes else "",
        ),
        ("operator CPU, steady state (% of one core)", f"{results.cpu_percent:.1f} %", ""),
        (
            "operator memory, RSS now / peak",
            f"{results.rss_mib:.0f} / {results.peak_mib:.0f} MiB",
            "",
        ),
        ("simulated agents' failed writes", f"{results.write_errors}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"\noperator scale ({results.nodes} nodes)")
    print(f"{'metric':{width}}  {'value':{value_width}}  target")
    for name, value, target in rows:
        print(f"{name:{width}}  {value:{value_width}}  {target}".rstrip())
    return latency_ok and writes_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 nodes, shorter windows")
    parser.add_argument("--nodes", type=int, default=None, help="default 1000 (--quick 100)")
    parser.add_argument(
        "--heartbeat", type=float, default=10.0, help="s between one node's reports"
    )
    parser.add_argument("--steady", type=float, default=None, help="steady window, s (60; 15)")
    parser.add_argument("--trials", type=int, default=None, help="failure trials (20; 6)")
    parser.add_argument("--workers", type=int, default=16, help="writer threads")
    parser.add_argument("--timeout", type=float, default=180.0, help="fan-out/ready limit, s")
    parser.add_argument("--trial-timeout", type=float, default=30.0)
    args = parser.parse_args()
    args.nodes = args.nodes or (100 if args.quick else 1000)
    args.steady = args.steady or (15.0 if args.quick else 60.0)
    args.trials = args.trials if args.trials is not None else (6 if args.quick else 20)
    if not 1 <= args.nodes <= 5000:
        parser.error(f"--nodes {args.nodes}: between 1 and 5000")
    started = time.monotonic()
    with control_plane() as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        install_crds(kubeconfig)
        results = run(args, kubeconfig, Path(tmp))
    ok = report(results)
    print(f"(run took {time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
