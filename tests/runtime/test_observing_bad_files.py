"""Node files that are missing or hold garbage: the agent observes what it can, says
what it cannot (a ``NodeError`` naming the file), and its loop never sees an exception.

A copy of the checked-in kubelet tree (tests/node/trees/systemd-v2) is damaged one file
at a time: PSI files taken away (a kernel without PSI, ``cgroup.pressure`` off), or
holding bytes that are not text, a value cut short, digits that are not ASCII, a total
beyond 64 bits. ``observing`` (what the status and the planner get) answers "absent";
the readers under it raise ``NodeError`` naming the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from damon_agent.node import cgroups, errors, procfs, psi
from damon_agent.runtime import observing
from damon_agent.runtime.backends import userspace
from damon_agent.schemes import errors as schemes_errors

TREE = Path(__file__).resolve().parents[1] / "node" / "trees" / "systemd-v2"
POD_CGROUP = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod0f6e1a9c_3b2d_4c5e_8f7a_1b2c3d4e5f60.slice"
)
PSI_LINES = "some avg10=1.50 avg60=0.75 avg300=0.25 total=123456\n"
GARBAGE = [
    pytest.param(b"\xff\xfe\x00\x01", id="not-text"),
    pytest.param(b"some avg10=1.50 avg60=0.7", id="cut-short"),
    pytest.param(b"some avg10=1.50 avg60=0.75 avg300=0.25 total=99999999999999999999\n",
                 id="total-beyond-int64"),
    pytest.param("some avg10=1.50 avg60=0.75 avg300=0.25 total=١٢\n".encode(),
                 id="digits-not-ascii"),
    pytest.param(b"", id="empty"),
]  # fmt: skip
# (file, content) that no reader may take as a count.
BAD_COUNTS = [
    pytest.param("memory.current", b"\xff\xfe", id="memory.current-not-text"),
    pytest.param("memory.current", "¹²³\n".encode(), id="memory.current-superscript"),
    pytest.param("memory.current", b"12 34\n", id="memory.current-two-numbers"),
    pytest.param("memory.current", b"", id="memory.current-empty"),
    pytest.param("memory.stat", b"\xff\xfe", id="memory.stat-not-text"),
    pytest.param("memory.stat", "anon ¹²³\n".encode(), id="memory.stat-superscript"),
    pytest.param("memory.stat", b"anon 12 34\n", id="memory.stat-two-numbers"),
    pytest.param("cgroup.procs", b"\xff\xfe", id="cgroup.procs-not-text"),
    pytest.param("cgroup.procs", "¹²³\n".encode(), id="cgroup.procs-superscript"),
]


@pytest.fixture
def roots(tmp_path: Path) -> observing.NodeRoots:
    shutil.copytree(TREE, tmp_path / "tree", symlinks=True)
    (tmp_path / "tree" / "proc" / "pressure").mkdir()
    (tmp_path / "tree" / "proc" / "pressure" / "memory").write_text(PSI_LINES)
    return observing.NodeRoots(proc=tmp_path / "tree" / "proc", sys=tmp_path / "tree" / "sys")


def _pod_file(roots: observing.NodeRoots, name: str) -> Path:
    return roots.sys / "fs" / "cgroup" / POD_CGROUP.lstrip("/") / name


def test_the_undamaged_copy_reads_whole(roots: observing.NodeRoots) -> None:
    assert observing.read_psi(roots).some_total_us == 123456
    memory = observing.PodResolver(roots).pod_memory(POD_CGROUP)
    assert memory is not None and memory.psi is not None and memory.memory_bytes > 0


def test_missing_psi_files_are_absent_facts_and_named_errors(
    roots: observing.NodeRoots,
) -> None:
    (roots.proc / "pressure" / "memory").unlink()
    _pod_file(roots, "memory.pressure").unlink()
    assert observing.read_psi(roots) == observing.resources.Psi()
    resolver = observing.PodResolver(roots)
    memory = resolver.pod_memory(POD_CGROUP)
    assert memory is not None and memory.psi is None and memory.memory_bytes > 0
    with pytest.raises(errors.PressureUnavailableError, match=r"memory\.pressure: missing"):
        resolver.cgroup_pressure_total_us(POD_CGROUP)
    metrics = userspace.NodeMetrics(roots.proc, roots.sys)
    with pytest.raises(schemes_errors.MetricUnavailableError, match="pressure/memory: missing"):
        metrics.read("some_mem_psi_us")


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbled_psi_files_are_absent_facts_and_named_errors(
    roots: observing.NodeRoots, garbage: bytes
) -> None:
    system = roots.proc / "pressure" / "memory"
    system.write_bytes(garbage)
    _pod_file(roots, "memory.pressure").write_bytes(garbage)
    with pytest.raises(errors.NodeError, match="pressure/memory"):
        psi.read_system(psi.Resource.MEMORY, roots.proc)
    assert observing.read_psi(roots) == observing.resources.Psi()
    resolver = observing.PodResolver(roots)
    memory = resolver.pod_memory(POD_CGROUP)
    assert memory is not None and memory.psi is None
    with pytest.raises(errors.NodeError, match=r"memory\.pressure"):
        resolver.cgroup_pressure_total_us(POD_CGROUP)
    with pytest.raises(schemes_errors.MetricUnavailableError, match="pressure/memory"):
        userspace.NodeMetrics(roots.proc, roots.sys).read("some_mem_psi_us")


@pytest.mark.parametrize(("name", "garbage"), BAD_COUNTS)
def test_garbled_cgroup_counts_are_named_errors(
    roots: observing.NodeRoots, name: str, garbage: bytes
) -> None:
    _pod_file(roots, name).write_bytes(garbage)
    layout = cgroups.discover(roots.proc, roots.sys)
    read = {
        "memory.current": lambda: cgroups.memory_usage_bytes(layout, POD_CGROUP),
        "memory.stat": lambda: cgroups.memory_stat(layout, POD_CGROUP),
        "cgroup.procs": lambda: cgroups.pids(layout, POD_CGROUP, recursive=False),
    }[name]
    with pytest.raises(errors.MalformedFileError, match=name.replace(".", r"\.")):
        read()
    # What the status reads says "no such fact" and goes on.
    memory = observing.PodResolver(roots).pod_memory(POD_CGROUP)
    assert (memory is None) == (name == "memory.current")


def test_a_process_named_with_bytes_that_are_not_text_is_read(tmp_path: Path) -> None:
    # Any process may name itself so (prctl PR_SET_NAME): it must not stop the readers.
    host = Path("/proc/self")
    (tmp_path / "4242").mkdir()
    status = host.joinpath("status").read_bytes().split(b"\n")
    status[0] = b"Name:\t\xffbad\xfe"
    (tmp_path / "4242" / "status").write_bytes(b"\n".join(status))
    stat = host.joinpath("stat").read_bytes()
    name_end = stat.rindex(b")")
    stat = stat[: stat.index(b"(") + 1] + b"\xffbad\xfe" + stat[name_end:]
    (tmp_path / "4242" / "stat").write_bytes(stat)
    assert procfs.read_status(4242, tmp_path).name == "\udcffbad\udcfe"
    assert procfs.cpu_seconds(4242, tmp_path) >= 0
