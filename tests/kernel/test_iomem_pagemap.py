"""/proc/iomem parsing (fake and real) and pagemap decoding (fake and real)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from damon_agent.node import pagemap
from damon_agent.ops.kernel import errors, iomem

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000a0000-000fffff : Reserved
00100000-bfffffff : System RAM
  01000000-01ffffff : Kernel code
fec00000-fec003ff : PNP0003:00
100000000-63fffffff : System RAM
"""


def test_ram_ranges_are_top_level_system_ram(tmp_path: Path) -> None:
    (tmp_path / "iomem").write_text(IOMEM)
    assert iomem.ram_ranges(tmp_path) == [
        (0x1000, 0x9FC00),
        (0x100000, 0xC0000000),
        (0x100000000, 0x640000000),
    ]
    assert iomem.largest_ram_ranges(tmp_path) == [
        (0x100000, 0xC0000000),
        (0x100000000, 0x640000000),
    ]


def test_unprivileged_iomem_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "iomem").write_text("00000000-00000000 : System RAM\n")
    with pytest.raises(errors.ConfigError, match="needs root"):
        iomem.ram_ranges(tmp_path)


def test_host_iomem_has_ram() -> None:
    ranges = iomem.largest_ram_ranges()
    total = sum(end - start for start, end in ranges)
    meminfo_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    # Installed RAM is a bit above MemTotal (the kernel reserves some).
    assert meminfo_total <= total <= 1.2 * meminfo_total


def test_pagemap_entries_decode(tmp_path: Path) -> None:
    pid_dir = tmp_path / "77"
    pid_dir.mkdir()
    present = 1 << 63
    entries = [present | 0x1234, 0, present | (1 << 62) | 0x99, present | 0x5]
    # Pages 16..19 of the address space.
    raw = bytes(16 * 8) + b"".join(struct.pack("<Q", e) for e in entries)
    (pid_dir / "pagemap").write_bytes(raw)
    page = pagemap.PAGE_SIZE
    pfns = pagemap.frames(77, 16 * page, 20 * page, proc_root=tmp_path)
    assert pfns.tolist() == [0x1234, -1, 0x99, 0x5]
    assert pagemap.physical_addresses(77, 16 * page, 20 * page, proc_root=tmp_path).tolist() == [
        0x1234 * page,
        0x99 * page,
        0x5 * page,
    ]


def test_pagemap_of_this_process_maps_into_ram() -> None:
    buffer = np.ones(8 << 20, dtype=np.uint8)  # touched: every page present
    start = buffer.ctypes.data
    pfns = pagemap.frames(os.getpid(), start, start + buffer.nbytes)
    page = pagemap.PAGE_SIZE
    spanned = -(-(start + buffer.nbytes) // page) - start // page
    assert pfns.size == spanned
    assert (pfns > 0).mean() > 0.99
    addresses = pfns[pfns > 0] * pagemap.PAGE_SIZE
    ranges = iomem.ram_ranges()
    inside = np.zeros(addresses.size, dtype=bool)
    for low, high in ranges:
        inside |= (addresses >= low) & (addresses < high)
    assert inside.all()


def test_within_ram_keeps_the_ram_of_node_spans_and_drops_scraps() -> None:
    ram = [(0x1000, 0x9F000), (0x100000, 0x7FFE0000), (0x100000000, 0x140000000)]
    # A node span from 0 to 2 GiB with its holes; a second node's span above 4 GiB.
    spans = ((0, 0x80000000), (0x100000000, 0x180000000))
    assert iomem.within_ram(spans, ram) == ((0x100000, 0x7FFE0000), (0x100000000, 0x140000000))
    assert iomem.within_ram(((0x80000000, 0xC0000000),), ram) == ()
