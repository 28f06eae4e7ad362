"""When the harness boots a guest again: the emulator's int3 race, injected into boot().

No guest is booted here: ``_boot_once`` is replaced by a queue of runs, so what is tested
is the rule alone. The real race is seen in CI (tests/vm/test_kernel_suites.py and
test_deployed.py record it when it happens).
"""

from __future__ import annotations

from pathlib import Path

import harness
import pytest

INT3_DEATH = "[    6.362783] Oops: int3: 0000 [#1] PREEMPT SMP PTI\nKernel panic"
OTHER_DEATH = "[    6.362783] Oops: general protection fault\nKernel panic"


def _run(tmp_path: Path, rc: int | None, console: str) -> harness.GuestRun:
    share = tmp_path / f"run-{rc}-{len(console)}" / "share"
    share.mkdir(parents=True, exist_ok=True)
    return harness.GuestRun(rc, "", "", console, share, 1.0, 1.0, None)


def _boots(monkeypatch: pytest.MonkeyPatch, runs: list[harness.GuestRun]) -> list[int]:
    calls: list[int] = []

    def boot_once(*_args: object, **_kwargs: object) -> harness.GuestRun:
        calls.append(1)
        return runs[len(calls) - 1]

    monkeypatch.setattr(harness, "_boot_once", boot_once)
    return calls


def test_a_script_killed_by_the_int3_race_runs_again_when_the_caller_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    died, passed = _run(tmp_path, None, INT3_DEATH), _run(tmp_path, 0, "done")
    calls = _boots(monkeypatch, [died, passed])
    assert harness.boot("true", again_if_oopsed=True) is passed
    assert len(calls) == 2


def test_without_the_callers_leave_the_death_is_returned_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    died = _run(tmp_path, None, INT3_DEATH)
    calls = _boots(monkeypatch, [died])
    assert harness.boot("true") is died
    assert len(calls) == 1


def test_other_deaths_and_a_second_int3_death_are_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _run(tmp_path, None, OTHER_DEATH)
    calls = _boots(monkeypatch, [other])
    assert harness.boot("true", again_if_oopsed=True) is other
    assert len(calls) == 1

    first, second = _run(tmp_path, None, INT3_DEATH), _run(tmp_path, None, INT3_DEATH + " ")
    calls = _boots(monkeypatch, [first, second])
    assert harness.boot("true", again_if_oopsed=True) is second
    assert len(calls) == harness.BOOT_ATTEMPTS
