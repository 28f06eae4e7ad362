"""The physical address ranges a paddr context monitors: "System RAM" of /proc/iomem.

Only top-level ``System RAM`` lines count (nested lines are parts of them, such as
"Kernel code"). ``ram_ranges`` returns them sorted; ``largest_ram_ranges`` picks the
biggest ones, as a paddr monitor wants: the small low-memory ranges below 1 MiB are not
worth regions of their own. Reading /proc/iomem needs root (others see zeros), which the
error says.
"""

from __future__ import annotations

from pathlib import Path

from damon_agent.ops.kernel import errors


def ram_ranges(proc_root: Path = Path("/proc")) -> list[tuple[int, int]]:
    """Top-level System RAM ranges as sorted [start, end) pairs."""
    path = proc_root / "iomem"
    try:
        text = path.read_text()
    except OSError as err:
        raise errors.ConfigError(str(path), f"cannot read: {err.strerror or err}") from err
    ranges = []
    for line in text.splitlines():
        if line.startswith(" ") or ":" not in line:
            continue
        span, name = line.split(":", 1)
        if name.strip() != "System RAM":
            continue
        start_text, end_text = span.strip().split("-")
        start, last = int(start_text, 16), int(end_text, 16)
        ranges.append((start, last + 1))
    ranges.sort()
    if not ranges or all(end <= 1 for _, end in ranges):
        raise errors.ConfigError(
            str(path), "no System RAM ranges readable (reading addresses needs root)"
        )
    return ranges


def largest_ram_ranges(
    proc_root: Path = Path("/proc"), *, min_share: float = 0.01
) -> list[tuple[int, int]]:
    """RAM ranges holding at least ``min_share`` of all RAM, in address order."""
    ranges = ram_ranges(proc_root)
    total = sum(end - start for start, end in ranges)
    return [(s, e) for s, e in ranges if (e - s) >= min_share * total]


def within_ram(
    ranges: tuple[tuple[int, int], ...], ram: list[tuple[int, int]], *, min_bytes: int = 1 << 20
) -> tuple[tuple[int, int], ...]:
    """The parts of ``ranges`` that are System RAM, leaving out pieces under ``min_bytes``
    (the low-memory scraps below 1 MiB are not worth regions of their own)."""
    parts = [
        (max(start, ram_start), min(end, ram_end))
        for start, end in ranges
        for ram_start, ram_end in ram
        if max(start, ram_start) < min(end, ram_end)
    ]
    return tuple(sorted((s, e) for s, e in parts if e - s >= min_bytes))
