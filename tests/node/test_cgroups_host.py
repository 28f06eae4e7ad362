"""cgroups on the machine's real hierarchy: a memory child cgroup made for the test.

The host may keep memory on cgroup v1 (a hybrid host like this project's machines) or on
v2 (current distributions, the VM's guests): the tests hold on either, through
tests/support/memcg_support.py, which enables the memory controller on v2 parents as
systemd and kubelet do. The child is ``/damon-k8s-test-<pid>``, removed afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import memcg_support
import pytest
from node_support import Mapper

from damon_agent.node import cgroups, errors, procfs, psi


@pytest.fixture
def made() -> Iterator[memcg_support.Memcgs]:
    with memcg_support.memcgs() as memcgs:
        yield memcgs


@pytest.fixture
def memory_cgroup(made: memcg_support.Memcgs) -> str:
    path = f"/damon-k8s-test-{os.getpid()}"
    made.make(path)
    return path


def test_real_memory_child_cgroup(
    made: memcg_support.Memcgs, memory_cgroup: str, mapper: Mapper
) -> None:
    host_layout = made.layout
    made.enter(memory_cgroup, mapper.pid)

    assert cgroups.pids(host_layout, memory_cgroup) == (mapper.pid,)
    assert cgroups.process_cgroups(host_layout, mapper.pid).memory == memory_cgroup
    # The memcg filter's path form: the hierarchy-rooted path, which /proc/PID/cgroup shows.
    assert cgroups.memcg_path(host_layout, memory_cgroup) == memory_cgroup

    # Pages are charged to the cgroup the task is in when it faults them: allocate after
    # the move (neither v1 nor v2 moves earlier charges by default).
    before = cgroups.memory_usage_bytes(host_layout, memory_cgroup)
    mapper.anon(32 << 20)
    after = cgroups.memory_usage_bytes(host_layout, memory_cgroup)
    assert after - before >= 32 << 20, f"usage grew by {after - before} bytes only"
    footprint = procfs.cgroup_footprint(host_layout, memory_cgroup)
    assert footprint == procfs.footprint(mapper.pid)  # the child is the only member
    assert footprint.rss_anon_bytes >= 32 << 20 and footprint.rss_file_bytes >= mapper.size

    # The parent sees the child's pid through the recursive walk, not directly.
    parent = memory_cgroup.rsplit("/", 1)[0] or "/"
    assert mapper.pid in cgroups.pids(host_layout, parent)
    assert mapper.pid not in cgroups.pids(host_layout, parent, recursive=False)


def test_real_cgroup_pressure_where_the_hierarchy_has_it(
    made: memcg_support.Memcgs, memory_cgroup: str
) -> None:
    if made.version == 1:
        with pytest.raises(errors.PressureUnavailableError, match="cgroup v1"):
            psi.read_cgroup(made.layout, memory_cgroup)
    else:
        pressure = psi.read_cgroup(made.layout, memory_cgroup)
        assert pressure.source.endswith(f"{memory_cgroup}/memory.pressure")
        assert pressure.some.total_us >= 0


def test_real_missing_cgroup_is_a_typed_error(made: memcg_support.Memcgs) -> None:
    absent = f"/damon-k8s-absent-{os.getpid()}"
    with pytest.raises(errors.CgroupNotFoundError, match="no such directory"):
        cgroups.pids(made.layout, absent)
    assert not made.memory.directory(absent).exists()


def test_real_memory_readers_of_the_outcome(
    made: memcg_support.Memcgs, memory_cgroup: str, mapper: Mapper
) -> None:
    """memory.stat, refaults and swap as the status reads them, on v1 or v2."""
    layout = made.layout
    made.enter(memory_cgroup, mapper.pid)
    mapper.anon(8 << 20)
    stat = cgroups.memory_stat(layout, memory_cgroup)
    swap = cgroups.memory_swap_bytes(layout, memory_cgroup)
    if layout.memory_version == 2:
        assert stat["anon"] >= 8 << 20
        assert cgroups.refaults(stat) is not None  # counted since 5.9 (split by type)
        assert swap is None or swap >= 0  # None: no swap accounting on this kernel
    else:
        assert "rss" in stat or "total_rss" in stat
        assert swap is None  # v1 has no memory.swap.current
    assert cgroups.memory_usage_bytes(layout, memory_cgroup) >= 8 << 20


def test_real_memory_protection_where_the_hierarchy_has_it(
    made: memcg_support.Memcgs, memory_cgroup: str
) -> None:
    """memory.low / memory.min as a reclaim floor reads them: cgroup v2 only."""
    layout = made.layout
    if made.version == 1:
        with pytest.raises(errors.FactUnavailableError, match=r"cgroup v1 has no memory\.min"):
            cgroups.memory_protection_bytes(layout, memory_cgroup, "memory.min")
        return
    assert cgroups.memory_protection_bytes(layout, memory_cgroup, "memory.low") == 0
    (made.memory.directory(memory_cgroup) / "memory.low").write_text(f"{64 << 20}\n")
    assert cgroups.memory_protection_bytes(layout, memory_cgroup, "memory.low") == 64 << 20
    (made.memory.directory(memory_cgroup) / "memory.min").write_text("max\n")
    assert (
        cgroups.memory_protection_bytes(layout, memory_cgroup, "memory.min")
        == cgroups.PROTECTION_MAX
    )
