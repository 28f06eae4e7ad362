"""DAMON's own modules in the kernel under test, for the tests of living beside them.

Each kernel of the matrix has at least one DAMON module that runs exclusively: DAMON_STAT
from 6.17 on (Debian enables it at boot; the kernel suite turns it off before the tests
start), DAMON_RECLAIM and DAMON_LRU_SORT since 5.16/6.0. ``pick`` chooses the holder a
test uses by probing ``/sys/module`` (DAMON_STAT where the kernel has it, else
DAMON_RECLAIM, else DAMON_LRU_SORT), so a kernel without DAMON_STAT tests the same
behaviour with another module instead of skipping. ``running(module)`` turns it on for a
test and always off again, failing the test if it cannot (the suite must leave every
module off).

``host_damon_unused_because`` decides whether a test run may use the host's own DAMON
(tests/conftest.py): only where it is free, and on a kernel series the suite knows.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MODULE_ROOT = Path("/sys/module")
DAMON_ADMIN = Path("/sys/kernel/mm/damon/admin")
PREFERENCE = ("damon_stat", "damon_reclaim", "damon_lru_sort")
NAMES = {
    "damon_stat": "DAMON_STAT",
    "damon_reclaim": "DAMON_RECLAIM",
    "damon_lru_sort": "DAMON_LRU_SORT",
}
WAIT_S = 10.0


def enabled_path(module: str) -> Path:
    return MODULE_ROOT / module / "parameters" / "enabled"


def present(module: str) -> bool:
    return enabled_path(module).exists()


def is_on(module: str) -> bool:
    return enabled_path(module).read_text().strip() == "Y"


def pick() -> str:
    """The DAMON module this kernel has, DAMON_STAT first."""
    for module in PREFERENCE:
        if present(module):
            return module
    pytest.fail(
        f"the kernel under test has none of {', '.join(PREFERENCE)} under {MODULE_ROOT}: "
        "no DAMON module to hold DAMON with (CONFIG_DAMON_STAT/RECLAIM/LRU_SORT)"
    )


def _write(module: str, value: str) -> None:
    """Write ``enabled``, retrying EBUSY a while (a kdamond still stopping)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            enabled_path(module).write_text(value)
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def turn_off(module: str) -> None:
    if is_on(module):
        _write(module, "N")
    if is_on(module):
        raise AssertionError(f"{NAMES[module]} is still on after writing N: the suite needs it off")


@contextmanager
def running(module: str) -> Iterator[Path]:
    """``module`` on for the block, off after it, whatever happens in it."""
    if not present(module):
        pytest.fail(f"the kernel under test has no {NAMES[module]} ({enabled_path(module)})")
    if is_on(module):
        pytest.fail(
            f"{NAMES[module]} was already on before the test: the kernel suite turns DAMON's "
            "modules off first, and every test leaves them off"
        )
    try:
        _write(module, "Y")
        if not is_on(module):
            pytest.fail(f"{NAMES[module]} did not turn on")
        yield enabled_path(module)
    finally:
        turn_off(module)


def stat_figures() -> tuple[list[int], int]:
    """DAMON_STAT's own memory_idle_ms_percentiles and estimated_memory_bandwidth."""
    parameters = MODULE_ROOT / "damon_stat" / "parameters"
    text = (parameters / "memory_idle_ms_percentiles").read_text().strip()
    percentiles = [int(v) for v in text.split(",")]
    bandwidth = int((parameters / "estimated_memory_bandwidth").read_text().strip())
    return percentiles, bandwidth


@contextmanager
def foreign_kdamond(
    admin: Path, start: int, size: int, sample_us: int | None = None
) -> Iterator[Path]:
    """Another tool's kdamond, made by raw writes: paddr over ``size`` bytes from ``start``,
    running. Yields its directory; turned off and removed afterwards (the list back to 0)."""
    kdamonds = admin / "kdamonds"
    (kdamonds / "nr_kdamonds").write_text("1")
    base = kdamonds / "0"
    context = base / "contexts" / "0"
    (base / "contexts/nr_contexts").write_text("1")
    (context / "operations").write_text("paddr")
    if sample_us is not None:
        (context / "monitoring_attrs/intervals/sample_us").write_text(str(sample_us))
    (context / "targets/nr_targets").write_text("1")
    (context / "targets/0/regions/nr_regions").write_text("1")
    (context / "targets/0/regions/0/start").write_text(str(start))
    (context / "targets/0/regions/0/end").write_text(str(start + size))
    try:
        (base / "state").write_text("on")
        yield base
    finally:
        if (base / "state").read_text().strip() == "on":
            (base / "state").write_text("off")
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                (kdamonds / "nr_kdamonds").write_text("0")
                break
            except OSError:  # EBUSY while the kdamond is still stopping
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


# The kernel series whose whole kernel suite is known to pass (the VM's DAMON matrix): a
# host running one of them, with its DAMON free, runs the kernel tests too.
KNOWN_SERIES = ("6.12", "6.18", "7.3")


def host_damon_unused_because(
    admin: Path = DAMON_ADMIN, module_root: Path = MODULE_ROOT, release: str = ""
) -> str:
    """Why the host's own DAMON is not used by this run; empty when it is free to use.

    Free means: root, a kernel series the suite knows, the DAMON sysfs interface, no
    kdamond configured (someone else's, maybe since boot) and no DAMON module running
    (they hold DAMON exclusively). Only reads.
    """
    series = ".".join((release or os.uname().release).split(".")[:2])
    if os.geteuid() != 0:
        return "not root"
    if series not in KNOWN_SERIES:
        return f"its kernel {series} is not one the kernel suite knows ({', '.join(KNOWN_SERIES)})"
    nr_kdamonds = admin / "kdamonds" / "nr_kdamonds"
    if not nr_kdamonds.exists():
        return f"no DAMON sysfs interface at {admin}"
    if nr_kdamonds.read_text().strip() != "0":
        return f"{nr_kdamonds.read_text().strip()} kdamond(s) the tests did not make exist"
    for module in PREFERENCE:
        enabled = module_root / module / "parameters" / "enabled"
        if enabled.exists() and enabled.read_text().strip() == "Y":
            return f"{module} runs (it holds DAMON exclusively)"
    return ""
