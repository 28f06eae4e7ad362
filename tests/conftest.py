"""Shared fixtures.

``host_damon``: exclusive use of the host kernel's DAMON for one test. Tests that start
kdamonds take it; it serialises them (also across concurrent pytest processes) and, after
the test, turns off and removes whatever kdamonds are left so that ``nr_kdamonds`` is 0
again, and fails the test if it had to clean up.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DAMON_ADMIN = Path("/sys/kernel/mm/damon/admin")
HOST_LOCK = Path("/run/lock/damon-k8s-host-damon.lock")


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
def host_damon() -> Iterator[Path]:
    """The DAMON sysfs admin directory, held exclusively; left with nr_kdamonds == 0."""
    if not (DAMON_ADMIN / "kdamonds" / "nr_kdamonds").exists():
        pytest.fail(
            f"{DAMON_ADMIN} is missing: this test needs the host kernel's DAMON sysfs "
            "interface (CONFIG_DAMON_SYSFS) and root"
        )
    HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with HOST_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _nr_kdamonds() != 0:
            pytest.fail(
                f"the host already has {_nr_kdamonds()} kdamond(s) configured; "
                "refusing to touch DAMON state this test did not create"
            )
        try:
            yield DAMON_ADMIN
        finally:
            left = _nr_kdamonds()
            if left:
                _force_clean()
                pytest.fail(f"test left {left} kdamond(s) configured; cleaned up")
