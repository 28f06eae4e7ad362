"""Shared fixtures, and where the ``kernel`` tests run.

Helpers shared between tests are modules in tests/support/ (pytest's ``pythonpath``),
imported by name; conftest.py files provide fixtures, and nothing imports them.

Tests marked ``kernel`` drive a real kernel's DAMON. They run against a kernel the
project boots itself: ``tests/vm/test_kernel_suites.py`` boots each kernel of the VM's
matrix once and runs every ``kernel`` test inside that guest (``DAMON_K8S_KERNEL_UNDER_TEST``
names the kernel there). In any other pytest run they are deselected, and the summary
says where they went: the host's own DAMON may belong to the machine (a kdamond running
since boot, DAMON_STAT), and the suite's result must not depend on it. To run them on
the host's kernel by hand, where its DAMON is free, set ``DAMON_K8S_KERNEL_UNDER_TEST=host``.

``kernel_damon``: exclusive use of the kernel under test's DAMON for one test. Tests
that start kdamonds take it; it serialises them (also across concurrent pytest
processes), refuses to start when a kdamond it did not make is configured, and after the
test turns off and removes whatever kdamonds are left so that ``nr_kdamonds`` is 0
again, failing the test if it had to clean up.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DAMON_ADMIN = Path("/sys/kernel/mm/damon/admin")
DAMON_LOCK = Path("/run/lock/damon-k8s-kernel-damon.lock")
KERNEL_UNDER_TEST = os.environ.get("DAMON_K8S_KERNEL_UNDER_TEST", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if KERNEL_UNDER_TEST:
        return
    forwarded = [item for item in items if item.get_closest_marker("kernel")]
    if not forwarded:
        return
    config.hook.pytest_deselected(items=forwarded)
    items[:] = [item for item in items if not item.get_closest_marker("kernel")]
    config.stash[_FORWARDED] = len(forwarded)


_FORWARDED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    forwarded = config.stash.get(_FORWARDED, 0)
    if forwarded:
        terminalreporter.write_line(
            f"{forwarded} kernel test(s) deselected here: they run inside the VM's kernel "
            "matrix (tests/vm/test_kernel_suites.py)"
        )


def _nr_kdamonds() -> int:
    return int((DAMON_ADMIN / "kdamonds" / "nr_kdamonds").read_text().strip())


def _force_clean() -> None:
    kdamonds = DAMON_ADMIN / "kdamonds"
    for n in range(_nr_kdamonds()):
        state = kdamonds / str(n) / "state"
        try:
            if state.read_text().strip() == "on":
                state.write_text("off\n")
        except OSError:
            pass
    for _ in range(50):
        try:
            (kdamonds / "nr_kdamonds").write_text("0\n")
            return
        except OSError:  # EBUSY while a kdamond is still stopping
            time.sleep(0.1)


@pytest.fixture
def kernel_damon() -> Iterator[Path]:
    """The DAMON sysfs admin directory, held exclusively; left with nr_kdamonds == 0."""
    if not (DAMON_ADMIN / "kdamonds" / "nr_kdamonds").exists():
        pytest.fail(
            f"{DAMON_ADMIN} is missing: this test needs the kernel's DAMON sysfs "
            "interface (CONFIG_DAMON_SYSFS) and root"
        )
    DAMON_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with DAMON_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _nr_kdamonds() != 0:
            pytest.fail(
                f"the kernel already has {_nr_kdamonds()} kdamond(s) configured; "
                "refusing to touch DAMON state this test did not create"
            )
        try:
            yield DAMON_ADMIN
        finally:
            left = _nr_kdamonds()
            if left:
                _force_clean()
                pytest.fail(f"test left {left} kdamond(s) configured; cleaned up")
