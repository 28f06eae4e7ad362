"""Fixtures of the kernel backend's tests.

- ``fake``: an on-disk fake DAMON sysfs tree in ``tmp_path`` (``ops.kernel.fake``);
- ``fake_driver``: a driver on it, with a state directory, a fixed boot id and no real
  sleeping;
- ``spawn_workload``: starts ``hotcold_workload.py`` (tests/support) and stops it after
  the test;
- ``host_state_dir``: a state directory for drivers on the real host.

Real-kernel tests take the shared ``kernel_damon`` fixture (tests/conftest.py), which
serialises them and checks ``nr_kdamonds`` is 0 afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hotcold_workload
import memcg_support
import pytest

from damon_agent.ops.kernel import driver
from damon_agent.ops.kernel import fake as fake_sysfs

# Run as a script, by the path of the module (tests/support) found by name.
WORKLOAD = Path(hotcold_workload.__file__)


class _Ticks:
    """A monotonic clock that advances only when slept on."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake(tmp_path: Path) -> fake_sysfs.FakeDamonSysfs:
    return fake_sysfs.FakeDamonSysfs(tmp_path / "admin")


@pytest.fixture
def fake_driver(fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path) -> driver.KdamondDriver:
    ticks = _Ticks()
    return driver.KdamondDriver(
        fake, tmp_path / "state", boot_id="boot-1", sleep=ticks.sleep, monotonic=ticks.monotonic
    )


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


@pytest.fixture
def host_state_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent-state"


@pytest.fixture
def child_memcg() -> Iterator[tuple[Path, str]]:
    """A new memory cgroup (v1 or v2, whichever the kernel under test has): its directory
    and memcg path (the cgroup's path from its hierarchy's mount point, the form the
    kernel's memcg filter compares against ``cgroup_path()``)."""
    with memcg_support.memcgs() as made:
        path = f"/damon-k8s-test-{os.getpid()}"
        # The workload fixture (requested after this one) has ended before removal.
        yield made.make(path), made.memcg_path(path)
