"""A VM guest as a real node: kubelet and containerd in the guest, the host's control plane.

The host's control plane (``scripts/controlplane.sh``: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) and a guest (the default 6.12 kernel, cgroup v2)
booted as node ``vm-node-<id>`` by ``vm_node.VmNode`` (scripts/node/guest.sh: containerd
with runc and the CNI bridge, kubelet v1.20 built from Debian's source). No registry: the
sandbox and busybox images are OCI archives made by ``scripts/build-node-images.sh`` and
imported with ``ctr``.

One boot: the Node registers and becomes Ready; a DaemonSet (busybox, pod network, so the
CNI plugins give the pod its address; selecting only this node) is made into a pod by the
real controller-manager, scheduled by the real scheduler's node affinity, run by
kubelet; the pod's cgroup is under the guest's ``kubepods`` tree on cgroup v2, with the
files the project reads (memory.current, memory.swap.current, memory.stat, PSI), and from
the pod's network namespace the apiserver answers at the ``kubernetes`` Service address
(the guest's static stand-in for kube-proxy). Deleting the DaemonSet removes the pod and
its cgroup. Figures: build times, stages' guest uptimes, time to Ready and to Running.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import harness
import kube_support
import pytest
import vm_node
from kube_support import Kubectl

pytestmark = [pytest.mark.vm, pytest.mark.kube]

# Guest: 200 s of its own, the host's margin on top; the test stays within 4 minutes.
VM = vm_node.node_vm_config(deadline_s=200)
READY_TIMEOUT_S = 120
RUNNING_TIMEOUT_S = 90
GONE_TIMEOUT_S = 60


def _wait_for[T](predicate: Callable[[], T], timeout: float, what: str, node: vm_node.VmNode) -> T:
    deadline = time.monotonic() + timeout
    while True:
        node.check_alive()
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{node.describe()}")
        time.sleep(1.0)


def _pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]] | None:
    """The namespace's pods, or None while the apiserver does not answer (the control plane
    is shared: another session's test may be restarting it)."""
    found = kubectl.get("pods", "-n", namespace)
    return None if found is None else list(found["items"])


@pytest.fixture(scope="module")
def kubeconfig() -> Iterator[Path]:
    with kube_support.held_controlplane() as path:
        yield path


def daemonset(name: str, namespace: str, node: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # Only this node: other sessions' Node objects have no kubelet.
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "sleeper",
                            "image": vm_node.BUSYBOX_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                        }
                    ],
                },
            },
        },
    }


def test_guest_is_a_ready_node_that_runs_a_daemonset_pod(
    vm: harness.Runner, vm_figures: harness.Figures, kubeconfig: Path
) -> None:
    try:
        binaries_s = vm_node.build_binaries()
        _images, images_s = vm_node.build_node_images()
    except vm_node.NodeError as error:
        pytest.fail(str(error))
    vm_figures.record(build_binaries_s=round(binaries_s, 1), build_images_s=round(images_s, 1))
    kubectl = Kubectl(kubeconfig)
    suffix = uuid.uuid4().hex[:8]
    name, namespace = f"vm-node-{suffix}", f"vm-node-{suffix}"
    node = vm_node.VmNode(
        name=name, kubeconfig=kubeconfig, assets=vm.assets, work_root=vm.work_dir, config=VM
    )
    kubectl("create", "namespace", namespace)
    try:
        with node:
            _drive(kubectl, node, namespace, vm_figures)
    except vm_node.NodeError as error:
        pytest.fail(str(error))
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        vm_figures.record(
            stages=node.progress(), test_s=round(time.monotonic() - node.submitted, 1)
        )


def _drive(
    kubectl: Kubectl, node: vm_node.VmNode, namespace: str, figures: harness.Figures
) -> None:
    node.wait_stage("mounts", 4 * 3600)
    # The boot may first wait for another process's guest (harness.BOOT_LOCK), and for the
    # image disk to be made (once per set of image archives: a boot of its own).
    figures.record(
        image_disk_prepare_s=round(node.disk_prepare_s or 0, 1),
        waited_for_vm_s=round(time.monotonic() - node.submitted - node.progress()["mounts"], 1),
    )
    ready_uptime = node.wait_ready(READY_TIMEOUT_S)
    stages = node.progress()
    figures.record(
        guest_ready_s=ready_uptime, kubelet_to_ready_s=round(ready_uptime - stages["kubelet"], 1)
    )
    found = node.node_object() or {}
    info = found["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.20.2"
    assert info["containerRuntimeVersion"].startswith("containerd://1.6")
    addresses = {a["type"]: a["address"] for a in found["status"]["addresses"]}
    assert addresses["InternalIP"] == vm_node.NODE_IP

    applied = time.monotonic()
    kubectl.apply(daemonset("sleeper", namespace, node.name))

    def running_pod() -> dict[str, Any] | None:
        pods = _pods(kubectl, namespace) or []
        on_node = [p for p in pods if p["spec"].get("nodeName") == node.name]
        return next((p for p in on_node if p["status"].get("phase") == "Running"), None)

    pod = _wait_for(running_pod, RUNNING_TIMEOUT_S, "the DaemonSet's pod Running", node)
    assert pod is not None
    running_s = round(time.monotonic() - applied, 1)
    uid = pod["metadata"]["uid"]
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://")[-1]
    pod_ip = pod["status"]["podIP"]
    figures.record(apply_to_running_s=running_s, pod_ip=pod_ip)
    assert pod_ip.startswith("10.88."), pod_ip  # the CNI bridge's host-local range
    assert pod["spec"]["serviceAccountName"] == "default"

    # The pod's cgroup, made by kubelet (pod) and runc (container) on cgroup v2.
    pod_cgroup = f"/sys/fs/cgroup/kubepods/besteffort/pod{uid}"
    seen = node.exec(
        f"""
        set -e
        cd {pod_cgroup}/{container_id}
        stat -f -c %T /sys/fs/cgroup
        cat cgroup.procs | head -n 1
        for f in memory.current memory.swap.current memory.stat memory.pressure; do
            test -r $f && echo "$f ok"
        done
        pid=$(head -n 1 cgroup.procs)
        tr '\\0' ' ' </proc/$pid/cmdline; echo
        # From the pod's network namespace: the apiserver at the kubernetes Service address.
        nsenter -t "$pid" -n curl -sk --max-time 10 https://10.96.0.1/healthz; echo
        nsenter -t "$pid" -n ip -4 -o addr show eth0
        # How the container sees cgroups (containerd 1.6 on v2: its own cgroup namespace).
        ns=private
        [ "$(readlink /proc/$pid/ns/cgroup)" = "$(readlink /proc/1/ns/cgroup)" ] && ns=host
        echo "cgroupns $ns $(cat /proc/$pid/cgroup)"
        """
    )
    cgroupns = next((line for line in seen.output.splitlines() if line.startswith("cgroupns")), "")
    figures.record(container_cgroupns=cgroupns)
    assert seen.rc == 0, seen.output
    lines = seen.output.splitlines()
    assert lines[0] == "cgroup2fs", seen.output
    assert int(lines[1]) > 1, seen.output
    for name in ("memory.current", "memory.swap.current", "memory.stat", "memory.pressure"):
        assert f"{name} ok" in lines, seen.output
    assert "sleep 3600" in seen.output or "sh -c" in seen.output, seen.output
    assert "ok" in lines, seen.output  # /healthz through the DNAT and the bridge's masquerade
    assert pod_ip in seen.output, seen.output

    deleted = time.monotonic()
    kubectl("delete", "daemonset", "sleeper", "-n", namespace, "--wait=false")
    _wait_for(
        lambda: _pods(kubectl, namespace) == [],
        GONE_TIMEOUT_S,
        "the DaemonSet's pod gone",
        node,
    )
    figures.record(delete_to_pod_gone_s=round(time.monotonic() - deleted, 1))
    _wait_for(
        lambda: node.exec(f"test ! -e {pod_cgroup}").rc == 0,
        GONE_TIMEOUT_S,
        "the pod's cgroup removed",
        node,
    )
    figures.record(delete_to_cgroup_gone_s=round(time.monotonic() - deleted, 1))
    listing = node.exec("cd /sys/fs/cgroup && find kubepods -maxdepth 2 -type d | sort")
    figures.record(kubepods_after=listing.output.split())
