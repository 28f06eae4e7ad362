"""Soak: the agents and the operator under a steady scheme set; does anything grow?

Setup, on the real kube-apiserver (scripts/controlplane.sh's, reused when running): two
Node objects and, on each, four pods as a kubelet leaves them (Running, a container
ID), all labelled with a fresh instance id; the real operator (``damon-operator
--instance ID --standalone``) and one real agent per node (``damon-agent daemon
--backend sim``: the in-process monitor and DAMOS engine over the simulated hot/cold
workload, paced to the wall clock, with the daemon's whole loop: planning, PSI feedback,
status writes, metrics). The scheme set stays the same throughout:

* a ClusterDamonScheme over both nodes' whole memory (paddr): a ``stat`` scheme;
* a DamonScheme selecting the pods: examples/reclaim-cold.yaml with a 2 s age, so
  pageout keeps running, under its PSI quota goal.

Every ``--sample-s`` seconds (60) each process's RSS (VmRSS) and CPU time are read from
/proc. Reported: the table over time, each process's RSS slope (least squares after
the warm-up samples, MiB per hour) beside the noise (the residuals' standard deviation),
and its average CPU. A slope counts as growth when, over the run, it adds more than
both 2 MiB and three times the noise; exit status 1 then, or when a process died.

    .venv/bin/python bench/soak.py                          # 30 minutes
    .venv/bin/python bench/soak.py --minutes 3 --sample-s 15   # a quick look

Everything the run creates is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import operator_scale as common  # bench/ scripts share helpers by plain import

ROOT = Path(__file__).resolve().parents[1]
SIM_WORKLOAD = ROOT / "examples" / "workloads" / "hot-cold.yaml"
NODES = 2
PODS_PER_NODE = 4
WARMUP_SAMPLES = 2
GROWTH_FLOOR_MIB = 2.0


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    rss_mib: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Trend:
    slope_mib_per_h: float
    noise_mib: float
    grown_mib: float  # the slope over the whole run

    @property
    def grows(self) -> bool:
        return self.grown_mib > max(GROWTH_FLOOR_MIB, 3 * self.noise_mib)


def trend(minutes: list[float], rss_mib: list[float]) -> Trend:
    """Least-squares line through the samples after the warm-up."""
    xs, ys = minutes[WARMUP_SAMPLES:], rss_mib[WARMUP_SAMPLES:]
    if len(xs) < 3:
        raise SystemExit(f"too few samples after the warm-up ({len(xs)}): run longer")
    slope, intercept = statistics.linear_regression(xs, ys)
    residuals = [y - (slope * x + intercept) for x, y in zip(xs, ys, strict=True)]
    return Trend(
        slope_mib_per_h=slope * 60,
        noise_mib=statistics.pstdev(residuals),
        grown_mib=slope * (xs[-1] - xs[0]),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubectl(kubeconfig: Path, *args: str, body: Any = None) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=None if body is None else json.dumps(body),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _pod(kubeconfig: Path, namespace: str, name: str, node: str, instance: str) -> None:
    labels = {"app": "soak", common.INSTANCE_LABEL: instance}
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "busybox"}],
        },
    }
    _kubectl(kubeconfig, "apply", "-f", "-", body=body)
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    status = {
        "status": {
            "phase": "Running",
            "qosClass": "Burstable",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "app",
                    "image": "busybox",
                    "imageID": "",
                    "containerID": f"containerd://{container_id}",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        }
    }
    _kubectl(
        kubeconfig, "patch", "pod", name, "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip


def _schemes(namespace: str, instance: str) -> list[dict[str, Any]]:
    whole = common.scheme_body(instance)
    whole["metadata"]["name"] = f"soak-{instance}"
    reclaim = yaml.safe_load((ROOT / "examples" / "reclaim-cold.yaml").read_text())
    reclaim["metadata"].update(
        namespace=namespace, labels={common.INSTANCE_LABEL: instance}, name="soak-reclaim"
    )
    reclaim["spec"]["podSelector"] = {"matchLabels": {"app": "soak"}}
    reclaim["spec"]["schemes"][0]["accessPattern"]["age"]["min"] = "2s"
    return [whole, reclaim]


@contextlib.contextmanager
def cluster(kubeconfig: Path, instance: str) -> Iterator[tuple[str, list[str]]]:
    namespace = f"soak-{instance}"
    nodes = [f"soak-{instance}-{i}" for i in range(NODES)]
    try:
        _kubectl(kubeconfig, "create", "namespace", namespace)
        # Pods are admitted only once the namespace's default account exists (made by
        # the controller-manager): wait for it.
        deadline = time.monotonic() + 60
        while _kubectl(
            kubeconfig, "get", "serviceaccounts", "-n", namespace, "-o", "name"
        ).split() != ["serviceaccount/default"]:
            if time.monotonic() > deadline:
                raise SystemExit(f"no default service account in {namespace} after 60 s")
            time.sleep(0.5)
        for node in nodes:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node, "labels": {common.INSTANCE_LABEL: instance}},
            }
            _kubectl(kubeconfig, "apply", "-f", "-", body=body)
            for i in range(PODS_PER_NODE):
                _pod(kubeconfig, namespace, f"{node}-pod{i}", node, instance)
        yield namespace, nodes
    finally:
        for scheme in _schemes(namespace, instance):
            kind = scheme["kind"].lower()
            where = ["-n", namespace] if "namespace" in scheme["metadata"] else []
            name = scheme["metadata"]["name"]
            with contextlib.suppress(SystemExit):
                _kubectl(kubeconfig, "delete", kind, name, *where, "--wait=false")
        for args in (
            ("delete", "namespace", namespace, "--wait=false"),
            *(("delete", "damonnode", node, "--ignore-not-found") for node in nodes),
            *(("delete", "node", node, "--ignore-not-found") for node in nodes),
        ):
            with contextlib.suppress(SystemExit):
                _kubectl(kubeconfig, *args)


def start_agent(kubeconfig: Path, node: str, workdir: Path) -> Process:
    executable = Path(sys.executable).parent / "damon-agent"
    port = _free_port()
    command = [
        str(executable), "daemon", "--node-name", node, "--backend", "sim",
        "--sim-workload", str(SIM_WORKLOAD), "--listen", f"127.0.0.1:{port}",
        "--state-dir", str(workdir / f"state-{node}"),
    ]  # fmt: skip
    log_path = workdir / f"agent-{node}.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with log_path.open("wb") as out:
        popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Process(f"agent {node.rsplit('-', 1)[-1]}", popen, log_path)


def run(args: argparse.Namespace, kubeconfig: Path, workdir: Path) -> bool:
    instance = uuid.uuid4().hex[:8]
    processes: list[Process] = []
    with cluster(kubeconfig, instance) as (namespace, nodes):
        log_path = workdir / "operator.log"
        processes.append(
            Process("operator", common.start_operator(kubeconfig, instance, log_path), log_path)
        )
        processes += [start_agent(kubeconfig, node, workdir) for node in nodes]
        try:
            for scheme in _schemes(namespace, instance):
                _kubectl(kubeconfig, "apply", "-f", "-", body=scheme)
            common.log(
                f"instance {instance}: operator and {len(nodes)} sim agents, "
                f"{PODS_PER_NODE} pods each; sampling every {args.sample_s:g} s "
                f"for {args.minutes:g} min"
            )
            minutes = sample(processes, args)
        finally:
            for process in processes:
                process.popen.terminate()
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(timeout=30)
                if process.popen.poll() is None:
                    process.popen.kill()
        ready = _kubectl(kubeconfig, "get", "damonscheme", "soak-reclaim", "-n", namespace)
    return report(processes, minutes, ready)


def sample(processes: list[Process], args: argparse.Namespace) -> list[float]:
    started = time.monotonic()
    minutes: list[float] = []
    end = started + args.minutes * 60
    while True:
        now = time.monotonic()
        for process in processes:
            if process.popen.poll() is not None:
                tail = process.log_path.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{process.name} exited ({process.popen.returncode}):\n{tail}")
            rss, _ = common.proc_memory_mib(process.popen.pid)
            process.rss_mib.append(rss)
            process.cpu_s.append(common.proc_cpu_s(process.popen.pid))
        minutes.append((now - started) / 60)
        common.log(
            f"{minutes[-1]:5.1f} min  "
            + "  ".join(f"{p.name} {p.rss_mib[-1]:.1f} MiB" for p in processes)
        )
        if now >= end:
            return minutes
        time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))


def report(processes: list[Process], minutes: list[float], scheme_row: str) -> bool:
    print("\nRSS (MiB) over time")
    print(f"{'min':>6}  " + "  ".join(f"{p.name:>10}" for p in processes))
    for i, at in enumerate(minutes):
        print(f"{at:6.1f}  " + "  ".join(f"{p.rss_mib[i]:10.1f}" for p in processes))
    print(
        f"\n{'process':<10} {'RSS first':>10} {'RSS last':>9} {'slope MiB/h':>12} "
        f"{'noise MiB':>10} {'grown MiB':>10} {'CPU %':>6}  verdict"
    )
    healthy = True
    for p in processes:
        fit = trend(minutes, p.rss_mib)
        span_s = (minutes[-1] - minutes[WARMUP_SAMPLES]) * 60
        cpu = 100 * (p.cpu_s[-1] - p.cpu_s[WARMUP_SAMPLES]) / span_s
        verdict = "GROWS" if fit.grows else "flat (within noise)"
        healthy &= not fit.grows
        print(
            f"{p.name:<10} {p.rss_mib[0]:10.1f} {p.rss_mib[-1]:9.1f} "
            f"{fit.slope_mib_per_h:12.2f} {fit.noise_mib:10.2f} {fit.grown_mib:10.2f} "
            f"{cpu:6.1f}  {verdict}"
        )
    print(
        f"\ngrowth: more than {GROWTH_FLOOR_MIB:g} MiB and three times the noise over the "
        f"run, after {WARMUP_SAMPLES} warm-up samples\n\n{scheme_row}"
    )
    return healthy


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    parser.add_argument("--sample-s", type=float, default=60.0, help="sampling period (60)")
    args = parser.parse_args()
    if args.minutes <= 0 or args.sample_s <= 0:
        parser.error("--minutes and --sample-s must be more than 0")
    with common.control_plane() as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        common.install_crds(kubeconfig)
        return 0 if run(args, kubeconfig, Path(tmp)) else 1


if __name__ == "__main__":
    sys.exit(main())
