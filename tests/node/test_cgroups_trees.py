"""cgroups against checked-in kubelet layouts the host does not have.

Trees: ``systemd-v2`` and ``cgroupfs-v2`` (cgroup v2 with memory, both kubelet drivers, all
three QoS classes, containerd / CRI-O / Docker container scopes), and ``hybrid-v1`` (memory
on cgroup v1, cgroup v2 without memory, as on this host).
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from node_support import TREES

from damon_agent.node import cgroups, errors, files, psi

BURSTABLE = "0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60"
BEST_EFFORT = "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"
GUARANTEED = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
SANDBOX = "5a" * 32
APP = "a1" * 32
SIDECAR = "b2" * 32
BE_APP = "c3" * 32
G_APP = "d4" * 32


def layout_of(tree: str) -> cgroups.CgroupLayout:
    return cgroups.discover(proc_root=TREES / tree / "proc", sys_root=TREES / tree / "sys")


@pytest.mark.parametrize(
    ("driver", "qos", "expected"),
    [
        (
            cgroups.Driver.SYSTEMD,
            cgroups.QoSClass.BURSTABLE,
            "/kubepods.slice/kubepods-burstable.slice/"
            "kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice",
        ),
        (
            cgroups.Driver.SYSTEMD,
            cgroups.QoSClass.BEST_EFFORT,
            "/kubepods.slice/kubepods-besteffort.slice/"
            "kubepods-besteffort-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice",
        ),
        (
            cgroups.Driver.SYSTEMD,
            cgroups.QoSClass.GUARANTEED,
            "/kubepods.slice/kubepods-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice",
        ),
        (
            cgroups.Driver.CGROUPFS,
            cgroups.QoSClass.BURSTABLE,
            "/kubepods/burstable/pod0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60",
        ),
        (
            cgroups.Driver.CGROUPFS,
            cgroups.QoSClass.BEST_EFFORT,
            "/kubepods/besteffort/pod0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60",
        ),
        (
            cgroups.Driver.CGROUPFS,
            cgroups.QoSClass.GUARANTEED,
            "/kubepods/pod0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60",
        ),
    ],
)
def test_pod_cgroup_path_per_driver_and_qos(
    driver: cgroups.Driver, qos: cgroups.QoSClass, expected: str
) -> None:
    assert cgroups.pod_cgroup_path(driver, qos, BURSTABLE) == expected


def test_discover_systemd_v2() -> None:
    layout = layout_of("systemd-v2")
    assert layout.driver is cgroups.Driver.SYSTEMD
    assert layout.unified is not None and layout.memory is layout.unified
    assert layout.memory_version == 2
    assert "memory" in layout.unified.controllers
    assert layout.unified.mount_point == TREES / "systemd-v2" / "sys" / "fs" / "cgroup"


def test_discover_cgroupfs_v2() -> None:
    layout = layout_of("cgroupfs-v2")
    assert layout.driver is cgroups.Driver.CGROUPFS
    assert layout.memory_version == 2


def test_discover_hybrid_puts_memory_on_v1() -> None:
    layout = layout_of("hybrid-v1")
    assert layout.unified is not None and "memory" not in layout.unified.controllers
    assert layout.memory is not None and layout.memory.version == 1
    assert layout.memory.mount_point == TREES / "hybrid-v1" / "sys" / "fs" / "cgroup" / "memory"
    assert layout.memory_version == 1
    assert layout.driver is cgroups.Driver.CGROUPFS
    assert layout.pods is layout.memory


@pytest.mark.parametrize(
    ("tree", "pod_path", "container_paths", "runtimes"),
    [
        (
            "systemd-v2",
            "/kubepods.slice/kubepods-burstable.slice/"
            "kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice",
            [
                f"cri-containerd-{SANDBOX}.scope",
                f"cri-containerd-{APP}.scope",
                f"cri-containerd-{SIDECAR}.scope",
            ],
            {"containerd"},
        ),
        (
            "cgroupfs-v2",
            "/kubepods/burstable/pod0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60",
            [SANDBOX, APP, SIDECAR],
            {None},
        ),
        (
            "hybrid-v1",
            "/kubepods/burstable/pod0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60",
            [SANDBOX, APP, SIDECAR],
            {None},
        ),
    ],
)
def test_burstable_pod_to_containers_to_pids(
    tree: str, pod_path: str, container_paths: list[str], runtimes: set[str | None]
) -> None:
    layout = layout_of(tree)
    pod = cgroups.find_pod(layout, BURSTABLE)
    assert pod.qos is cgroups.QoSClass.BURSTABLE
    assert pod.path == pod_path
    assert sorted(c.path for c in pod.containers) == sorted(
        f"{pod_path}/{name}" for name in container_paths
    )
    assert {c.container_id for c in pod.containers} == {SANDBOX, APP, SIDECAR}
    assert {c.runtime for c in pod.containers} == runtimes
    app = pod.container(f"containerd://{APP}")
    assert app.container_id == APP
    expected_app_pids = (1001, 1002, 1004) if tree == "systemd-v2" else (1001, 1002)
    assert cgroups.pids(layout, app.path) == expected_app_pids
    assert cgroups.pids(layout, app.path, recursive=False) == (1001, 1002)
    assert cgroups.pids(layout, pod.path) == tuple(sorted({1000, 1003, *expected_app_pids}))


def test_systemd_best_effort_crio_skips_conmon() -> None:
    layout = layout_of("systemd-v2")
    pod = cgroups.find_pod(layout, BEST_EFFORT)
    assert pod.qos is cgroups.QoSClass.BEST_EFFORT
    assert [(c.container_id, c.runtime) for c in pod.containers] == [(BE_APP, "cri-o")]
    assert pod.containers[0].path.endswith(f"/crio-{BE_APP}.scope")
    # conmon's pid 2000 still belongs to the pod (it is in the pod's cgroup tree)
    assert cgroups.pids(layout, pod.path) == (2000, 2001)
    assert cgroups.pids(layout, pod.containers[0].path) == (2001,)


@pytest.mark.parametrize(
    ("tree", "path", "runtime"),
    [
        (
            "systemd-v2",
            f"/kubepods.slice/kubepods-podc1d2e3f4_a5b6_4c7d_8e9f_0a1b2c3d4e5f.slice/docker-{G_APP}.scope",
            "docker",
        ),
        ("cgroupfs-v2", f"/kubepods/podc1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f/{G_APP}", None),
        ("hybrid-v1", f"/kubepods/podc1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f/{G_APP}", None),
    ],
)
def test_guaranteed_pod_sits_under_kubepods(tree: str, path: str, runtime: str | None) -> None:
    layout = layout_of(tree)
    pod = cgroups.find_pod(layout, GUARANTEED)
    assert pod.qos is cgroups.QoSClass.GUARANTEED
    assert [(c.path, c.runtime) for c in pod.containers] == [(path, runtime)]
    assert cgroups.pids(layout, pod.path) == (3001,)


@pytest.mark.parametrize("tree", ["systemd-v2", "cgroupfs-v2", "hybrid-v1"])
def test_list_pods_finds_each_pod_once_with_its_qos(tree: str) -> None:
    pods = cgroups.list_pods(layout_of(tree))
    assert [(p.pod_uid, p.qos) for p in pods] == [
        (GUARANTEED, cgroups.QoSClass.GUARANTEED),
        (BURSTABLE, cgroups.QoSClass.BURSTABLE),
        (BEST_EFFORT, cgroups.QoSClass.BEST_EFFORT),
    ]


def test_find_pod_with_wrong_qos_or_unknown_uid_names_what_it_tried() -> None:
    layout = layout_of("systemd-v2")
    with pytest.raises(errors.PodCgroupNotFoundError) as raised:
        cgroups.find_pod(layout, BURSTABLE, cgroups.QoSClass.GUARANTEED)
    assert "kubepods-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice" in str(raised.value)
    with pytest.raises(errors.PodCgroupNotFoundError) as raised:
        cgroups.find_pod(layout, "11111111-2222-3333-4444-555555555555")
    assert len(raised.value.looked_at) == 3


def test_unknown_container_is_a_typed_error() -> None:
    pod = cgroups.find_pod(layout_of("systemd-v2"), BURSTABLE)
    with pytest.raises(errors.ContainerCgroupNotFoundError, match="e5e5"):
        pod.container("containerd://" + "e5" * 32)


@pytest.mark.parametrize("bad", ["../etc", "abc/def", "", "x" * 65, "pod uid"])
def test_bad_pod_uid_is_rejected_by_name(bad: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="pod_uid"):
        cgroups.pod_cgroup_path(cgroups.Driver.SYSTEMD, cgroups.QoSClass.BURSTABLE, bad)


def test_parse_container_id_forms() -> None:
    assert cgroups.parse_container_id(f"containerd://{APP}") == ("containerd", APP)
    assert cgroups.parse_container_id(f"cri-o://{APP}") == ("cri-o", APP)
    assert cgroups.parse_container_id(APP) == (None, APP)
    with pytest.raises(errors.InvalidArgumentError, match="container_id"):
        cgroups.parse_container_id("containerd://not-hex")


def test_qos_from_kubernetes_status() -> None:
    assert cgroups.QoSClass.from_kubernetes("BestEffort") is cgroups.QoSClass.BEST_EFFORT
    assert cgroups.QoSClass.from_kubernetes("Guaranteed") is cgroups.QoSClass.GUARANTEED
    with pytest.raises(errors.InvalidArgumentError, match="qos_class"):
        cgroups.QoSClass.from_kubernetes("burstable")


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (
            "systemd-v2",
            "/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice/cri-containerd-{APP}.scope",
        ),
        ("hybrid-v1", f"/kubepods/burstable/pod0f6e1a9c-3b2d-4c5e-8f7a-1b2c3d4e5f60/{APP}"),
    ],
)
def test_memcg_path_is_rooted_at_the_memory_hierarchy(tree: str, expected: str) -> None:
    layout = layout_of(tree)
    container = cgroups.find_pod(layout, BURSTABLE).container(APP)
    # DAMON compares memcg_path with cgroup_path(): rooted at the hierarchy, leading '/',
    # never the mount point.
    assert cgroups.memcg_path(layout, container.path) == expected
    assert cgroups.memcg_path(layout, container.path + "/") == expected
    with pytest.raises(errors.CgroupNotFoundError):
        cgroups.memcg_path(layout, "/kubepods/none")


def test_memcg_path_respects_a_mount_of_a_subtree(tmp_path: Path) -> None:
    # In a cgroup namespace the mount's root is not '/': paths stay hierarchy-rooted.
    mount = tmp_path / "sys" / "fs" / "cgroup"
    (mount / "kubepods" / "pod1").mkdir(parents=True)
    (mount / "cgroup.controllers").write_text("memory\n")
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(
        "25 24 0:23 /system.slice/node /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    )
    layout = cgroups.discover(tmp_path / "proc", tmp_path / "sys")
    assert layout.unified is not None
    assert layout.unified.directory("/system.slice/node/kubepods") == mount / "kubepods"
    assert (
        cgroups.memcg_path(layout, "/system.slice/node/kubepods/pod1")
        == "/system.slice/node/kubepods/pod1"
    )
    with pytest.raises(errors.InvalidArgumentError, match="outside"):
        layout.unified.directory("/other")


def test_memory_usage_v2_and_v1() -> None:
    v2 = layout_of("systemd-v2")
    v1 = layout_of("hybrid-v1")
    assert cgroups.memory_usage_bytes(v2, cgroups.find_pod(v2, BURSTABLE).path) == 50331648
    app_v1 = cgroups.find_pod(v1, BURSTABLE).container(APP)
    assert cgroups.memory_usage_bytes(v1, app_v1.path) == 41943040


def test_process_cgroups_on_hybrid_reads_the_memory_line() -> None:
    layout = layout_of("hybrid-v1")
    where = cgroups.process_cgroups(layout, 1001, TREES / "hybrid-v1" / "proc")
    assert where.memory == f"/kubepods/burstable/pod{BURSTABLE}/{APP}"
    assert where.unified == "/"
    with pytest.raises(errors.ProcessGoneError):
        cgroups.process_cgroups(layout, 999999, TREES / "hybrid-v1" / "proc")


def test_no_kubepods_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "sys" / "fs" / "cgroup").mkdir(parents=True)
    (tmp_path / "sys" / "fs" / "cgroup" / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mountinfo").write_text(
        "25 24 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    )
    layout = cgroups.discover(tmp_path / "proc", tmp_path / "sys")
    assert layout.driver is None
    with pytest.raises(errors.KubepodsNotFoundError):
        cgroups.find_pod(layout, BURSTABLE)


def test_no_cgroup_mounts_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mountinfo").write_text("22 1 254:1 / / rw - ext4 /dev/vda rw\n")
    with pytest.raises(errors.CgroupLayoutUnknownError, match="no cgroup2 mount"):
        cgroups.discover(tmp_path / "proc", tmp_path / "sys")


def test_relative_or_dotted_cgroup_paths_are_rejected() -> None:
    layout = layout_of("systemd-v2")
    for bad in ("kubepods.slice", "/kubepods.slice/../etc"):
        with pytest.raises(errors.InvalidArgumentError, match="cgroup_path"):
            cgroups.pids(layout, bad)


def test_pod_pressure_on_v2_and_typed_error_on_v1() -> None:
    v2 = layout_of("systemd-v2")
    pressure = psi.read_cgroup(v2, cgroups.find_pod(v2, BURSTABLE).path)
    assert pressure.some.avg10 == 1.5 and pressure.some.total_us == 123456
    assert pressure.full is not None and pressure.full.total_us == 65432
    v1 = layout_of("hybrid-v1")
    with pytest.raises(errors.PressureUnavailableError, match="cgroup v1"):
        psi.read_cgroup(v1, cgroups.find_pod(v1, BURSTABLE).path)


def test_a_cgroup_being_removed_reads_as_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubelet deleting a pod: its cgroup still lists files, reading one fails ENODEV
    (seen under pod churn in the 7.3 guest, where it ended the agent's status build)."""
    layout = layout_of("systemd-v2")
    pod = cgroups.find_pod(layout, BURSTABLE, cgroups.QoSClass.BURSTABLE).path
    assert cgroups.memory_usage_bytes(layout, pod) >= 0  # readable as checked in

    def dying(path: Path) -> str:
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(files, "read_text", dying)
    for read in (cgroups.memory_usage_bytes, cgroups.memory_stat, cgroups.pids):
        with pytest.raises(errors.CgroupNotFoundError):
            read(layout, pod)


def test_dying_descendants_come_from_the_v2_roots_cgroup_stat() -> None:
    assert cgroups.dying_descendants(layout_of("systemd-v2")) == 7
    # No cgroup.stat in this tree: unreadable, said so (the metric then has no series).
    with pytest.raises(errors.FactUnavailableError, match=r"cgroup\.stat: missing"):
        cgroups.dying_descendants(layout_of("cgroupfs-v2"))
