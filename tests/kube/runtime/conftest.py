"""Fixtures for the agents' end-to-end tests: agents as local processes, pods as a kubelet
would leave them.

=============== ========= ==================================================================
run_agent       function  ``run_agent(node, backend="sim"|"kernel", *extra_args)``: starts
                          ``damon-agent daemon`` for ``node`` on a free local port, waits
                          for /healthz; returns ``AgentProcess`` (``.url``, ``.log()``,
                          ``.get(path, token=...)``, ``.credentials``, ``.stop() -> exit
                          code``); SIGTERMed after the test. ``get`` sends the admin
                          kubeconfig's token unless given another (``None``: no token);
                          ``credentials`` is that token for ``snapshot_client``.
make_pod        function  ``make_pod(namespace, name, node, labels, real=False)``: a Pod
                          bound to ``node`` whose status is filled as a kubelet would
                          (phase Running, QoS class Burstable, a container ID). With
                          ``real=True`` it also gets a real pod and container memory
                          cgroup (on the kernel's memory hierarchy, v1 or v2; cgroupfs
                          layout ``/kubepods/burstable/pod<UID>/<container id>``) holding
                          a real process that touches 64 MiB; all removed afterwards.
=============== ========= ==================================================================

The control plane, CRDs, namespaces, nodes and the operator come from tests/kube/conftest.py.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kube_support
import memcg_support
import pytest

from damon_agent.runtime import snapshot_client

REPO = Path(__file__).resolve().parents[3]
SIM_WORKLOAD = REPO / "examples" / "workloads" / "hot-cold.yaml"

# A process that waits to be moved into its cgroup (a line on stdin), then allocates and
# touches 64 MiB so that the pages are charged to that cgroup, then keeps 8 MiB hot.
WORKLOAD = """
import sys, time
sys.stdin.readline()
buf = bytearray(64 << 20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
print("ready", flush=True)
while True:
    for i in range(0, 8 << 20, 4096):
        buf[i] = (buf[i] + 1) & 0xFF
    time.sleep(0.01)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_ADMIN = "admin"  # AgentProcess.get's default: the admin kubeconfig's token


@dataclasses.dataclass
class AgentProcess:
    node: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    token: str  # the admin kubeconfig's: its user (system:masters) may read everything

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def credentials(self) -> snapshot_client.Token:
        return snapshot_client.Token(self.token, "the admin kubeconfig")

    def get(self, path: str, token: str | None = _ADMIN) -> tuple[int, str]:
        """(status, body) of GET ``path``, sent with ``token`` (the admin's by default)."""
        code, body, _ = kube_support.http_get(
            self.url + path, self.token if token == _ADMIN else token
        )
        return code, body

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return int(self.process.returncode)


@pytest.fixture
def run_agent(controlplane: Any, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []
    executable = Path(sys.executable).parent / "damon-agent"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install the project (scripts/bootstrap.sh)")

    admin_token = kube_support.kubeconfig_token(controlplane.kubeconfig)

    def run(node: str, backend: str = "sim", *extra: str) -> AgentProcess:
        port = _free_port()
        log_path = tmp_path / f"agent-{node}.log"
        command = [
            str(executable), "daemon",
            "--node-name", node,
            "--backend", backend,
            "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(tmp_path / f"state-{node}"),
            "--tick", "1",
            *extra,
        ]  # fmt: skip
        if backend == "sim":
            command += ["--sim-workload", str(SIM_WORKLOAD)]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=controlplane.env
            )
        agent = AgentProcess(node, process, f"http://127.0.0.1:{port}", log_path, admin_token)
        started.append(agent)
        # An emulated guest (the kernel suites) under load from other guests can take
        # more than 30 s to import the agent and serve: seen on 7.3.
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"agent for {node} exited with {process.returncode}:\n{agent.log()}")
            try:
                if agent.get("/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"agent for {node} did not answer /healthz:\n{agent.log()}")
            time.sleep(0.2)
        return agent

    yield run
    for agent in started:
        agent.stop()
        if "Traceback" in agent.log():
            sys.stderr.write(f"--- {agent.log_path} ---\n{agent.log()[-4000:]}\n")


@dataclasses.dataclass
class PodHandle:
    namespace: str
    name: str
    uid: str
    container_id: str
    cgroup: str | None = None  # the pod's cgroup path (real pods)
    container_cgroup: str | None = None
    process: subprocess.Popen[str] | None = None


@pytest.fixture
def make_pod(kubectl: Any) -> Iterator[Callable[..., PodHandle]]:
    made: list[PodHandle] = []
    cgroups = memcg_support.Memcgs()
    sa_done: set[str] = set()

    def make(
        namespace: str, name: str, node: str, labels: dict[str, str], real: bool = False
    ) -> PodHandle:
        if namespace not in sa_done:
            # No controller-manager: the admission plugin still wants the default account.
            kubectl("create", "serviceaccount", "default", "-n", namespace, check=False)
            sa_done.add(namespace)
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
        kubectl("apply", "-f", "-", input=json.dumps(body))
        uid = kubectl.json("pod", name, "-n", namespace)["metadata"]["uid"]
        container_id = uuid.uuid4().hex + uuid.uuid4().hex
        handle = PodHandle(namespace, name, uid, container_id)
        made.append(handle)
        if real:
            handle.cgroup = f"/kubepods/burstable/pod{uid}"
            handle.container_cgroup = f"{handle.cgroup}/{container_id}"
            cgroups.make(handle.container_cgroup)
            process = subprocess.Popen(
                [sys.executable, "-c", WORKLOAD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            handle.process = process
            cgroups.enter(handle.container_cgroup, process.pid)
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write("go\n")
            process.stdin.flush()
            if process.stdout.readline().strip() != "ready":
                pytest.fail("the pod's workload process did not start")
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
        kubectl(
            "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps(status),
        )  # fmt: skip
        return handle

    yield make
    for handle in made:
        if handle.process is not None:
            handle.process.kill()
            handle.process.wait(timeout=10)
            for pipe in (handle.process.stdin, handle.process.stdout):
                if pipe is not None:
                    pipe.close()
        kubectl(
            "delete", "pod", handle.name, "-n", handle.namespace, "--grace-period=0",
            "--force", "--wait=false", check=False,
        )  # fmt: skip
    cgroups.remove()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:5]
