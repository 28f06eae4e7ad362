"""A crash (``kill -9``) at any step of start or stop leaves only kdamonds the next run
recognises as its own: it adopts or removes them, and refuses none as foreign.

Each step is a sysfs write or a save of the ownership record. The driver runs once per
step count n, "dying" at its n-th step (an exception no code catches, as a SIGKILL lets
nothing run); then a fresh driver, with the same state directory, recovers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from damon_agent.ops.kernel import driver, model, ownership
from damon_agent.ops.kernel import fake as fake_sysfs

RAM = (model.Region(1 << 30, 2 << 30),)


class Killed(BaseException):
    """The process died here (BaseException: no ``except Exception`` may survive it)."""


class Steps:
    """Counts sysfs writes and record saves; raises ``Killed`` at step ``die_at``."""

    def __init__(self, die_at: int | None) -> None:
        self.die_at = die_at
        self.taken = 0

    def step(self) -> None:
        self.taken += 1
        if self.die_at is not None and self.taken == self.die_at:
            raise Killed


class DyingSysfs:
    """The fake tree, with every write counted as a step."""

    def __init__(self, inner: fake_sysfs.FakeDamonSysfs, steps: Steps) -> None:
        self.inner = inner
        self.steps = steps

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write(self, path: str, value: str) -> None:
        self.steps.step()
        self.inner.write(path, value)


@pytest.fixture
def dying_saves(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Steps]]:
    """Record saves count as steps of whichever ``Steps`` is current."""
    current: list[Steps] = []
    real_save = ownership.Ownership.save

    def save(self: ownership.Ownership, state: ownership.OwnedState) -> None:
        if current:
            current[-1].step()
        real_save(self, state)

    monkeypatch.setattr(ownership.Ownership, "save", save)
    yield current


def config(nr_schemes: int = 1) -> model.Kdamond:
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                targets=(model.Target(regions=RAM),),
                schemes=tuple(model.Scheme(action="stat") for _ in range(nr_schemes)),
            ),
        )
    )


def _driver(fs: object, state_dir: Path) -> driver.KdamondDriver:
    return driver.KdamondDriver(
        fs,  # type: ignore[arg-type]
        state_dir,
        boot_id="boot-1",
        sleep=lambda _s: None,
    )


def _steps_of(action: str, tmp_path: Path, dying_saves: list[Steps]) -> int:
    steps = Steps(None)
    dying_saves.append(steps)
    fake = fake_sysfs.FakeDamonSysfs(tmp_path / "count" / "admin")
    drv = _driver(DyingSysfs(fake, steps), tmp_path / "count" / "state")
    if action == "stop":
        drv.start_many([config(), config(2)])
        steps.taken = 0
        drv.stop_all()
    else:
        drv.start_many([config(), config(2)])
    dying_saves.pop()
    return steps.taken


@pytest.mark.parametrize("action", ["start", "stop"])
@pytest.mark.parametrize("adopt", [True, False])
def test_a_crash_at_any_step_leaves_nothing_foreign(
    action: str, adopt: bool, tmp_path: Path, dying_saves: list[Steps]
) -> None:
    total = _steps_of(action, tmp_path, dying_saves)
    assert total >= (10 if action == "start" else 3)  # every step is a place to die
    for die_at in range(1, total + 1):
        case = tmp_path / f"{action}-{die_at}"
        fake = fake_sysfs.FakeDamonSysfs(case / "admin")
        steps = Steps(None)
        dying_saves.append(steps)
        first = _driver(DyingSysfs(fake, steps), case / "state")
        if action == "stop":
            first.start_many([config(), config(2)])
            steps.taken = 0
        steps.die_at = die_at
        with pytest.raises(Killed):
            if action == "stop":
                first.stop_all()
            else:
                first.start_many([config(), config(2)])
        dying_saves.pop()

        successor = _driver(fake, case / "state")
        recovery = successor.recover(adopt=adopt)
        assert recovery.foreign == [], (action, die_at, recovery)
        running = [h.index for h in recovery.adopted]
        if not adopt:
            assert running == []
        for handle in recovery.adopted:
            assert successor.is_running(handle)
            assert handle.pid == int(fake.read(f"kdamonds/{handle.index}/pid"))
        successor.stop_all()
        assert fake.read("kdamonds/nr_kdamonds") == "0", (action, die_at)
        # And the successor can start afresh: nothing it left blocks the list.
        successor.start(config())
        successor.stop_all()
        assert fake.read("kdamonds/nr_kdamonds") == "0"
