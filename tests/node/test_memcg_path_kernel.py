"""The kernel itself accepts the memcg paths ``cgroups.memcg_path`` produces.

DAMON resolves a memcg filter's ``memcg_path`` to a memory cgroup id when the kdamond
starts, and refuses to start when no memory cgroup has that path. So a kdamond that turns
on with our path proves the form; one given a path that exists nowhere must fail, or the
check proves nothing. The sysfs writes are done by hand here: the sysfs driver is another
module's job, this only checks the path form against the real kernel.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import memcg_support
import pytest


def largest_system_ram() -> tuple[int, int]:
    best = (0, 0)
    for line in Path("/proc/iomem").read_text().splitlines():
        match = re.match(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", line)
        if match:
            start, end = int(match[1], 16), int(match[2], 16) + 1
            if end - start > best[1] - best[0]:
                best = (start, end)
    if best == (0, 0):
        pytest.fail("/proc/iomem lists no System RAM (addresses need root)")
    return best


def configure_memcg_filtered_stat(admin: Path, memcg_path: str) -> Path:
    """One kdamond, paddr over the largest RAM range, a stat scheme with a memcg filter."""
    kdamonds = admin / "kdamonds"
    (kdamonds / "nr_kdamonds").write_text("1")
    context = kdamonds / "0" / "contexts"
    (context / "nr_contexts").write_text("1")
    context = context / "0"
    (context / "operations").write_text("paddr")
    (context / "targets" / "nr_targets").write_text("1")
    regions = context / "targets" / "0" / "regions"
    (regions / "nr_regions").write_text("1")
    start, end = largest_system_ram()
    (regions / "0" / "start").write_text(str(start))
    (regions / "0" / "end").write_text(str(end))
    (context / "schemes" / "nr_schemes").write_text("1")
    scheme = context / "schemes" / "0"
    (scheme / "action").write_text("stat")
    filters = scheme / "ops_filters" if (scheme / "ops_filters").is_dir() else scheme / "filters"
    (filters / "nr_filters").write_text("1")
    (filters / "0" / "type").write_text("memcg")
    (filters / "0" / "memcg_path").write_text(memcg_path)
    (filters / "0" / "matching").write_text("Y")
    if (filters / "0" / "allow").exists():
        (filters / "0" / "allow").write_text("Y")
    return kdamonds / "0" / "state"


@pytest.fixture
def test_memcg() -> Iterator[str]:
    with memcg_support.memcgs() as made:
        path = f"/damon-k8s-memcg-{os.getpid()}"
        made.make(path)
        yield made.memcg_path(path)


def remove_kdamonds(admin: Path) -> None:
    for _ in range(50):
        try:
            (admin / "kdamonds" / "nr_kdamonds").write_text("0")
            return
        except OSError:  # EBUSY while the kdamond is still stopping
            time.sleep(0.1)
    pytest.fail("nr_kdamonds stayed busy for 5 s after turning the kdamond off")


def turn_on_and_off(admin: Path, state: Path) -> None:
    state.write_text("on")
    try:
        assert state.read_text().strip() == "on"
    finally:
        state.write_text("off")
        remove_kdamonds(admin)


@pytest.mark.kernel
def test_kernel_accepts_our_memcg_path(kernel_damon: Path, test_memcg: str) -> None:
    turn_on_and_off(kernel_damon, configure_memcg_filtered_stat(kernel_damon, test_memcg))


@pytest.mark.kernel
def test_kernel_rejects_a_memcg_path_that_does_not_exist(
    kernel_damon: Path, test_memcg: str
) -> None:
    state = configure_memcg_filtered_stat(kernel_damon, test_memcg + "-absent")
    try:
        with pytest.raises(OSError):
            state.write_text("on")
    finally:
        if state.read_text().strip() == "on":
            state.write_text("off")
        remove_kdamonds(kernel_damon)
