"""cgroups on the host's real hybrid hierarchy: a cgroup v1 memory child made for the test.

The test cgroup is made under the test process's own memory cgroup (``damon-k8s-test-<pid>``),
so the child stays inside whatever limits the test runs under, and is removed in a finally.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from damon_agent.node import cgroups, errors, procfs, psi

from .conftest import Mapper


@pytest.fixture
def host_layout() -> cgroups.CgroupLayout:
    layout = cgroups.discover()
    if layout.memory is None:
        pytest.fail(
            "the host has no memory cgroup hierarchy (TESTBED: v1 at /sys/fs/cgroup/memory)"
        )
    return layout


@pytest.fixture
def v1_memory_cgroup(host_layout: cgroups.CgroupLayout) -> Iterator[str]:
    memory = host_layout.memory
    assert memory is not None
    if memory.version != 1:
        pytest.fail(
            f"this test needs the memory controller on cgroup v1, as TESTBED says for this host; "
            f"found it on v{memory.version} at {memory.mount_point}"
        )
    own = cgroups.process_cgroups(host_layout, os.getpid()).memory
    if own is None:
        pytest.fail("/proc/self/cgroup has no memory line")
    path = cgroups.normalize(f"{own}/damon-k8s-test-{os.getpid()}")
    directory = memory.directory(path)
    directory.mkdir()
    try:
        yield path
    finally:
        parent_procs = memory.directory(own) / "cgroup.procs"
        for pid in (directory / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                parent_procs.write_text(pid)
        directory.rmdir()


def test_real_v1_memory_child_cgroup(
    host_layout: cgroups.CgroupLayout, v1_memory_cgroup: str, mapper: Mapper
) -> None:
    memory = host_layout.memory
    assert memory is not None
    (memory.directory(v1_memory_cgroup) / "cgroup.procs").write_text(str(mapper.pid))

    assert cgroups.pids(host_layout, v1_memory_cgroup) == (mapper.pid,)
    assert cgroups.process_cgroups(host_layout, mapper.pid).memory == v1_memory_cgroup
    # The memcg filter's path form: the hierarchy-rooted path, which /proc/PID/cgroup shows.
    assert cgroups.memcg_path(host_layout, v1_memory_cgroup) == v1_memory_cgroup

    # v1 charges pages to the cgroup the task is in when it faults them: allocate after the move.
    before = cgroups.memory_usage_bytes(host_layout, v1_memory_cgroup)
    mapper.anon(32 << 20)
    after = cgroups.memory_usage_bytes(host_layout, v1_memory_cgroup)
    assert after - before >= 32 << 20, f"usage grew by {after - before} bytes only"
    footprint = procfs.cgroup_footprint(host_layout, v1_memory_cgroup)
    assert footprint == procfs.footprint(mapper.pid)  # the child is the only member
    assert footprint.rss_anon_bytes >= 32 << 20 and footprint.rss_file_bytes >= mapper.size

    # The parent sees the child's pid through the recursive walk, not directly.
    parent = v1_memory_cgroup.rsplit("/", 1)[0] or "/"
    assert mapper.pid in cgroups.pids(host_layout, parent)
    assert mapper.pid not in cgroups.pids(host_layout, parent, recursive=False)


def test_real_v1_cgroup_has_no_pressure_file(
    host_layout: cgroups.CgroupLayout, v1_memory_cgroup: str
) -> None:
    with pytest.raises(errors.PressureUnavailableError, match="cgroup v1"):
        psi.read_cgroup(host_layout, v1_memory_cgroup)


def test_real_missing_cgroup_is_a_typed_error(host_layout: cgroups.CgroupLayout) -> None:
    with pytest.raises(errors.CgroupNotFoundError, match="no such directory"):
        cgroups.pids(host_layout, f"/damon-k8s-absent-{os.getpid()}")
    assert not Path(f"/sys/fs/cgroup/memory/damon-k8s-absent-{os.getpid()}").exists()
