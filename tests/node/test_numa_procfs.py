"""NUMA topology, tiers, classification, numa_maps and placement; process footprints."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from node_support import PAGE, TREES, Mapper

from damon_agent.node import errors, numa, procfs

NUMA_TREE = TREES / "numa-cxl"


def test_two_node_tree_with_cpu_less_lower_tier_node() -> None:
    topology = numa.read_topology(NUMA_TREE / "sys")
    node0, node1 = topology.node(0), topology.node(1)
    assert node0.cpus == (0, 1) and node0.has_cpus
    assert node1.cpus == () and not node1.has_cpus
    assert node0.mem_total_bytes == 1_000_000 * 1024
    assert node1.mem_free_bytes == 1_000_000 * 1024
    assert dict(node0.distances) == {0: 10, 1: 20}
    assert dict(node1.distances) == {0: 20, 1: 10}
    assert (node0.tier, node1.tier) == (4, 90)
    assert (node0.kind, node1.kind) == (numa.MemoryKind.DRAM, numa.MemoryKind.CXL)
    assert topology.dram_nodes == (0,) and topology.cxl_nodes == (1,)
    with pytest.raises(errors.InvalidArgumentError, match="node 5"):
        topology.node(5)


@pytest.mark.parametrize(
    ("has_cpus", "total", "tier", "best", "kind"),
    [
        (True, 1 << 30, None, None, numa.MemoryKind.DRAM),  # no tiering exposed
        (False, 1 << 30, None, None, numa.MemoryKind.CXL),  # CPU-less memory node
        (True, 1 << 30, 90, 4, numa.MemoryKind.CXL),  # lower tier, even with CPUs
        (True, 1 << 30, 4, 4, numa.MemoryKind.DRAM),
        (False, 1 << 30, 4, 4, numa.MemoryKind.CXL),  # CPU-less in the top tier
        (True, 0, None, None, numa.MemoryKind.NONE),  # CPUs only
    ],
)
def test_classify(
    has_cpus: bool, total: int, tier: int | None, best: int | None, kind: numa.MemoryKind
) -> None:
    assert numa.classify(has_cpus, total, tier, best) is kind


def test_single_tier_two_nodes_with_cpus_are_dram(tmp_path: Path) -> None:
    base = tmp_path / "devices" / "system" / "node"
    for node_id in (0, 1):
        directory = base / f"node{node_id}"
        directory.mkdir(parents=True)
        (directory / "cpulist").write_text(f"{node_id}\n")
        (directory / "distance").write_text("10 21\n" if node_id == 0 else "21 10\n")
        (directory / "meminfo").write_text(
            f"Node {node_id} MemTotal: 1000 kB\nNode {node_id} MemFree: 500 kB\n"
        )
    (base / "online").write_text("0-1\n")
    tier = tmp_path / "devices" / "virtual" / "memory_tiering" / "memory_tier4"
    tier.mkdir(parents=True)
    (tier / "nodelist").write_text("0-1\n")
    topology = numa.read_topology(tmp_path)
    assert topology.dram_nodes == (0, 1) and topology.cxl_nodes == ()
    assert {n.tier for n in topology.nodes} == {4}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0-3,8,10-11\n", (0, 1, 2, 3, 8, 10, 11)), ("\n", ()), ("5", (5,))],
)
def test_parse_cpulist(text: str, expected: tuple[int, ...]) -> None:
    assert numa.parse_cpulist(text) == expected


@pytest.mark.parametrize("bad", ["a-b", "3-1", "1,,2"])
def test_parse_cpulist_rejects(bad: str) -> None:
    with pytest.raises(errors.MalformedFileError):
        numa.parse_cpulist(bad, "/fake/cpulist")


def test_parse_numa_maps_fake() -> None:
    mappings = numa.read_numa_maps(4242, NUMA_TREE / "proc")
    assert [m.start for m in mappings][:3] == [0x55D0C0A00000, 0x55D0C1C00000, 0x7F1200000000]
    exe, heap, bound, spaced, interleaved, empty, stack = mappings
    assert exe.file == "/usr/bin/python3.12" and exe.pages_per_node == {0: 120}
    assert exe.counters["mapped"] == 120 and exe.counters["mapmax"] == 3
    assert heap.kinds == {"heap"} and heap.pages_per_node == {0: 200, 1: 100}
    assert bound.policy == "bind:1" and bound.pages_per_node == {1: 512}
    assert spaced.file == "/data/my file with spaces.bin" and spaced.pages_per_node == {0: 4, 1: 6}
    assert interleaved.page_size == 2 << 20 and interleaved.bytes_per_node == {
        0: 2 << 20,
        1: 2 << 20,
    }
    assert empty.pages_per_node == {} and empty.file is None
    assert stack.kinds == {"stack"}
    assert numa.bytes_per_node(mappings) == {
        0: (120 + 200 + 4 + 33) * 4096 + (2 << 20),
        1: (100 + 512 + 6) * 4096 + (2 << 20),
    }


def test_numa_maps_errors() -> None:
    with pytest.raises(errors.ProcessGoneError):
        numa.read_numa_maps(999999, NUMA_TREE / "proc")
    with pytest.raises(errors.MalformedFileError, match="line 1"):
        numa.parse_numa_maps("zzzz default N0=1\n", "/fake/numa_maps")
    with pytest.raises(errors.MalformedFileError, match="unknown field"):
        numa.parse_numa_maps("1000 default N0=1 ???\n", "/fake/numa_maps")


def test_host_node0_has_cpus_and_is_dram() -> None:
    topology = numa.read_topology()
    if not topology.nodes:
        pytest.fail("/sys/devices/system/node lists no online node")
    node0 = topology.node(0)
    assert node0.has_cpus, "the host's node 0 should have CPUs"
    assert set(node0.cpus) <= set(range(os.cpu_count() or 1))
    assert node0.mem_total_bytes > 0 and 0 < node0.mem_free_bytes <= node0.mem_total_bytes
    assert node0.distances[0] == 10  # local distance, by ACPI SLIT convention
    assert node0.kind is numa.MemoryKind.DRAM
    assert 0 in topology.dram_nodes


def test_host_child_placement_numa_maps_and_move_pages_query(mapper: Mapper) -> None:
    anon = mapper.anon(4 << 20)
    per_node = numa.bytes_per_node(numa.read_numa_maps(mapper.pid))
    online = {n.node_id for n in numa.read_topology().nodes}
    assert set(per_node) <= online
    assert sum(per_node.values()) >= (4 << 20) + mapper.size  # both mappings are resident
    addresses = np.arange(anon, anon + (4 << 20), PAGE, dtype=np.uint64)
    nodes = numa.page_nodes(mapper.pid, addresses)
    assert nodes.shape == (1024,)
    assert set(nodes.tolist()) == {0}, "a single-node host places every page on node 0"
    # An address that is mapped nowhere reports -EFAULT (page by page, not a failure).
    unmapped = numa.page_nodes(mapper.pid, [0x1000])
    assert unmapped.tolist() == [-errno.EFAULT]


def test_host_move_pages_query_of_exited_process_is_process_gone(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(errors.ProcessGoneError):
        numa.page_nodes(child.pid, [0x400000])


def test_status_fake_footprints() -> None:
    status = procfs.read_status(4242, NUMA_TREE / "proc")
    assert status.name == "workload" and status.state == "S" and not status.is_zombie
    assert status.footprint == procfs.Footprint(
        rss_bytes=4364 * 1024,
        vsz_bytes=262144 * 1024,
        rss_anon_bytes=3400 * 1024,
        rss_file_bytes=900 * 1024,
        rss_shmem_bytes=64 * 1024,
        swap_bytes=0,
    )
    kthread = procfs.read_status(2, NUMA_TREE / "proc")
    assert kthread.footprint == procfs.Footprint(rss_bytes=0, vsz_bytes=0)
    assert not procfs.is_alive(4243, NUMA_TREE / "proc")  # zombie
    assert procfs.is_alive(4242, NUMA_TREE / "proc")
    assert not procfs.is_alive(999999, NUMA_TREE / "proc")
    total = procfs.footprints_of([4242, 2, 999999], NUMA_TREE / "proc")
    assert total.rss_bytes == 4364 * 1024 and total.vsz_bytes == 262144 * 1024
    with pytest.raises(errors.InvalidArgumentError, match="pid"):
        procfs.read_status(0)


def test_host_child_footprint_grows_with_its_memory(mapper: Mapper) -> None:
    before = procfs.footprint(mapper.pid)
    assert before.rss_bytes >= mapper.size, "the child read every page of its 16 MiB mapping"
    assert before.vsz_bytes >= before.rss_bytes
    mapper.anon(8 << 20)
    after = procfs.footprint(mapper.pid)
    assert after.rss_anon_bytes - before.rss_anon_bytes >= 8 << 20
    assert after.vsz_bytes - before.vsz_bytes >= 8 << 20


ZONEINFO = """Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 12
  pages free     3840
        spanned  4095
        present  3998
  start_pfn:           1
Node 0, zone    DMA32
  pages free     200000
        spanned  258048
        present  258048
  start_pfn:           4096
Node 0, zone   Normal
  pages free     0
        spanned  0
        present  0
  start_pfn:           0
Node 1, zone   Normal
  pages free     260000
        spanned  262144
        present  262144
  start_pfn:           262144
Node 1, zone  Movable
  pages free     0
        spanned  0
  start_pfn:           0
"""


def test_node_spans_come_from_the_zones_start_and_spanned_pages() -> None:
    spans = numa.parse_node_spans(ZONEINFO, 4096)
    # Empty zones (Node 0's Normal, Node 1's Movable) do not stretch a span to 0.
    assert spans == {0: (4096, 262144 * 4096), 1: (262144 * 4096, 524288 * 4096)}
    assert numa.parse_node_spans("", 4096) == {}


def test_node_spans_of_this_machine_cover_its_memory() -> None:
    spans = numa.read_node_spans()
    assert spans, "no node spans in /proc/zoneinfo"
    total = sum(end - start for start, end in spans.values())
    assert total >= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
