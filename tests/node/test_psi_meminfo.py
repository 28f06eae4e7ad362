"""PSI and meminfo: parsing against fakes, and the host's real files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from node_support import TREES

from damon_agent.node import cgroups, errors, meminfo, psi

HYBRID_PROC = TREES / "hybrid-v1" / "proc"
NUMA_TREE = TREES / "numa-cxl"


def test_parse_memory_pressure_fake() -> None:
    pressure = psi.read_system(psi.Resource.MEMORY, HYBRID_PROC)
    assert pressure.some == psi.StallLine(0.31, 0.12, 0.04, 987654)
    assert pressure.full == psi.StallLine(0.11, 0.02, 0.0, 123)
    assert pressure.source.endswith("pressure/memory")


def test_cpu_pressure_without_full_line() -> None:
    pressure = psi.read_system(psi.Resource.CPU, HYBRID_PROC)
    assert pressure.some.avg10 == 7.05
    assert pressure.full is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", "no 'some' line"),
        ("some avg10=abc avg60=0.00 avg300=0.00 total=0\n", "line 1"),
        ("some avg10=101.00 avg60=0.00 avg300=0.00 total=0\n", "exceeds 100%"),
        ("some avg10=0.00 avg60=0.00 total=0\n", "line 1"),
    ],
)
def test_malformed_pressure_names_file_and_reason(text: str, reason: str) -> None:
    with pytest.raises(errors.MalformedFileError, match=reason) as raised:
        psi.parse_pressure(text, psi.Resource.MEMORY, "/fake/pressure/memory")
    assert raised.value.path == "/fake/pressure/memory"


def test_missing_psi_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(errors.PressureUnavailableError, match="CONFIG_PSI"):
        psi.read_system(psi.Resource.MEMORY, tmp_path)


def test_host_memory_pressure_is_sane_and_total_monotonic() -> None:
    if not Path("/proc/pressure/memory").exists():
        pytest.fail("/proc/pressure/memory is missing: the host kernel must have PSI enabled")
    first = psi.read_system()
    time.sleep(0.05)
    second = psi.read_system()
    for reading in (first, second):
        assert reading.full is not None, "memory PSI always has a full line"
        for line in (reading.some, reading.full):
            assert 0.0 <= line.avg10 <= 100.0
            assert 0.0 <= line.avg60 <= 100.0
            assert 0.0 <= line.avg300 <= 100.0
            assert line.total_us >= 0
        # all tasks stalled implies some were: full never exceeds some
        assert reading.full.total_us <= reading.some.total_us
    assert first.full is not None and second.full is not None
    assert second.some.total_us >= first.some.total_us
    assert second.full.total_us >= first.full.total_us
    for resource in (psi.Resource.CPU, psi.Resource.IO):
        assert psi.read_system(resource).resource is resource


def test_cgroup_v2_root_pressure() -> None:
    layout = cgroups.discover()
    if layout.unified is None:
        pytest.fail("the machine has no cgroup v2 hierarchy (none mounted under /sys/fs/cgroup)")
    pressure = psi.read_cgroup(layout, "/")
    assert pressure.source == str(layout.unified.mount_point / "memory.pressure")
    assert 0.0 <= pressure.some.avg300 <= 100.0


def test_meminfo_fake_units_and_rates() -> None:
    info = meminfo.read_meminfo(NUMA_TREE / "proc")
    assert info.total_bytes == 2048576 * 1024
    assert info.available_bytes == 1500000 * 1024
    assert info.get("HugePages_Total") == 0  # unit-less counters stay counts
    assert info.get("Hugepagesize") == 2048 * 1024
    assert info.used_bytes == (2048576 - 1250000) * 1024
    assert meminfo.free_mem_rate_permille(info) == 1250000 * 1000 // 2048576


def test_node_meminfo_fake_basis_points() -> None:
    node0 = meminfo.read_node_meminfo(0, NUMA_TREE / "sys")
    assert node0.total_bytes == 1_000_000 * 1024 and node0.free_bytes == 250_000 * 1024
    assert meminfo.node_mem_used_bp(node0) == 7500
    assert meminfo.node_mem_free_bp(node0) == 2500
    with pytest.raises(errors.MalformedFileError, match="MemAvailable"):
        _ = node0.available_bytes
    with pytest.raises(errors.FactUnavailableError, match="node7"):
        meminfo.read_node_meminfo(7, NUMA_TREE / "sys")


def test_malformed_meminfo_names_the_line() -> None:
    with pytest.raises(errors.MalformedFileError, match="line 2"):
        meminfo.parse_meminfo("MemTotal: 10 kB\nbroken line\n", "/fake/meminfo")
    with pytest.raises(errors.MalformedFileError, match="MemTotal"):
        meminfo.parse_meminfo("MemFree: 10 kB\n", "/fake/meminfo")


def test_host_meminfo_is_consistent() -> None:
    info = meminfo.read_meminfo()
    assert 0 < info.free_bytes <= info.total_bytes
    assert 0 < info.available_bytes <= info.total_bytes
    rate = meminfo.free_mem_rate_permille(info)
    assert 0 <= rate <= 1000
    node0 = meminfo.read_node_meminfo(0)
    used, free = meminfo.node_mem_used_bp(node0), meminfo.node_mem_free_bp(node0)
    assert 0 < used < 10_000 and 0 < free < 10_000
    assert abs(used + free - 10_000) <= 1  # integer division rounds each down
    assert node0.total_bytes <= info.total_bytes
