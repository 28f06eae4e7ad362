"""Shared fixtures, and where the ``kernel`` tests run.

Helpers shared between tests are modules in tests/support/ (pytest's ``pythonpath``),
imported by name; conftest.py files provide fixtures, and nothing imports them.

Tests marked ``kernel`` drive a real kernel's DAMON. They run against a kernel the
project boots itself: ``tests/vm/test_kernel_suites.py`` boots each kernel of the VM's
matrix once and runs every ``kernel`` test inside that guest (``DAMON_K8S_KERNEL_UNDER_TEST``
names the kernel there). In any other pytest run they are deselected, and the summary
says where they went: the host's own DAMON may belong to the machine (a kdamond running
since boot, DAMON_STAT), and the suite's result must not depend on it. Where the host's
DAMON is free and its kernel is one of the matrix's series, they run on the host too, in
addition (``damon_modules.host_damon_unused_because`` says why not otherwise). To run
them on the host's kernel by hand whatever it is, set ``DAMON_K8S_KERNEL_UNDER_TEST=host``.

``kernel_damon``: exclusive use of the kernel under test's DAMON for one test. Tests
that start kdamonds take it; it serialises them (also across concurrent pytest
processes), refuses to start when a kdamond it did not make is configured, and after the
test turns off and removes whatever kdamonds are left so that ``nr_kdamonds`` is 0
again, failing the test if it had to clean up.

``spawn_workload``: starts ``hotcold_workload.py`` (tests/support), a process with a known
hot and a known cold range, and stops it after the test.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import damon_modules
import hotcold_workload
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
    why_not = damon_modules.host_damon_unused_because()
    config.stash[_HOST_DAMON] = why_not
    if not why_not:
        return  # in addition to the VM's matrix, on the host's free DAMON
    config.hook.pytest_deselected(items=forwarded)
    items[:] = [item for item in items if not item.get_closest_marker("kernel")]
    config.stash[_FORWARDED] = len(forwarded)


_FORWARDED = pytest.StashKey[int]()
_HOST_DAMON = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    forwarded = config.stash.get(_FORWARDED, 0)
    if forwarded:
        terminalreporter.write_line(
            f"{forwarded} kernel test(s) deselected here: they run inside the VM's kernel "
            "matrix (tests/vm/test_kernel_suites.py); the host's own DAMON is not used: "
            + config.stash.get(_HOST_DAMON, "")
        )
    elif config.stash.get(_HOST_DAMON, None) == "":
        terminalreporter.write_line(
            "kernel tests ran on the host's own DAMON too (free, and a kernel the suite knows)"
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


# ---------------------------------------------------------------------------------------
# A workload with known hot and cold ranges, for the tests of the kernel under test

# Run as a script, by the path of the module (tests/support) found by name.
WORKLOAD = Path(hotcold_workload.__file__)


@dataclass
class Workload:
    pid: int
    hot: tuple[int, int]
    cold: tuple[int, int]
    process: subprocess.Popen[str]


@pytest.fixture
def spawn_workload() -> Iterator[Callable[..., Workload]]:
    started: list[subprocess.Popen[str]] = []

    def spawn(
        hot_mib: int = 256,
        cold_mib: int = 256,
        max_seconds: int = 60,
        cgroup_dir: Path | None = None,
    ) -> Workload:
        def enter_cgroup() -> None:
            # In the child before exec: every page it allocates is charged to this cgroup
            # (cgroups do not move the charges of pages allocated before a move).
            if cgroup_dir is not None:
                (cgroup_dir / "cgroup.procs").write_text(f"{os.getpid()}\n")

        process = subprocess.Popen(
            [sys.executable, str(WORKLOAD), str(hot_mib), str(cold_mib), str(max_seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=enter_cgroup,  # noqa: PLW1509 (no threads run in the test process)
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"workload {WORKLOAD} exited before reporting its ranges")
        info = json.loads(line)
        return Workload(info["pid"], tuple(info["hot"]), tuple(info["cold"]), process)

    yield spawn
    for process in started:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
