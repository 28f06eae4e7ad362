"""The opt-in DAMON_STAT takeover against a fake /sys/module and state directory."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from damon_agent.ops.kernel import errors, takeover


def _stat(tmp_path: Path, enabled: str | None) -> Path:
    modules = tmp_path / "module"
    if enabled is not None:
        (modules / "damon_stat" / "parameters").mkdir(parents=True)
        (modules / "damon_stat" / "parameters" / "enabled").write_text(enabled + "\n")
    return modules


def _enabled(modules: Path) -> str:
    return (modules / "damon_stat" / "parameters" / "enabled").read_text().strip()


def _takeover(tmp_path: Path, modules: Path, boot: str = "boot-1") -> takeover.DamonStatTakeover:
    return takeover.DamonStatTakeover(modules, tmp_path / "state", boot)


def test_take_records_then_turns_it_off_and_give_back_undoes_both(tmp_path: Path) -> None:
    modules = _stat(tmp_path, "Y")
    held = _takeover(tmp_path, modules)
    assert held.take() is takeover.Taken.TURNED_OFF
    assert _enabled(modules) == "N"
    assert json.loads(held.record_path.read_text()) == {"version": 1, "boot_id": "boot-1"}
    assert held.holding()
    assert held.give_back() is True
    assert _enabled(modules) == "Y"
    assert not held.record_path.exists() and not held.holding()


def test_a_restarted_agent_knows_it_is_still_holding(tmp_path: Path) -> None:
    modules = _stat(tmp_path, "Y")
    _takeover(tmp_path, modules).take()
    # The agent crashed; its successor (same boot) finds the record.
    again = _takeover(tmp_path, modules)
    assert again.take() is takeover.Taken.STILL_OURS
    assert again.holding()
    # A successor without the opt-in gives it back all the same.
    assert _takeover(tmp_path, modules).give_back() is True
    assert _enabled(modules) == "Y"


def test_off_by_someone_else_is_not_ours_to_give_back(tmp_path: Path) -> None:
    modules = _stat(tmp_path, "N")
    held = _takeover(tmp_path, modules)
    assert held.take() is takeover.Taken.ALREADY_OFF
    assert not held.record_path.exists()
    assert held.give_back() is False
    assert _enabled(modules) == "N"


def test_turned_back_on_meanwhile_only_drops_the_record(tmp_path: Path) -> None:
    modules = _stat(tmp_path, "Y")
    held = _takeover(tmp_path, modules)
    held.take()
    (modules / "damon_stat" / "parameters" / "enabled").write_text("Y\n")  # an admin
    assert held.give_back() is False
    assert _enabled(modules) == "Y" and not held.record_path.exists()


def test_a_kernel_without_damon_stat_is_left_alone(tmp_path: Path) -> None:
    modules = _stat(tmp_path, None)
    (modules / "damon_reclaim" / "parameters").mkdir(parents=True)
    reclaim = modules / "damon_reclaim" / "parameters" / "enabled"
    reclaim.write_text("Y\n")
    held = _takeover(tmp_path, modules)
    assert held.take() is takeover.Taken.ABSENT
    assert reclaim.read_text() == "Y\n"  # only DAMON_STAT is ever taken over
    assert not held.holding() and held.give_back() is False


def test_another_boots_record_is_stale(tmp_path: Path) -> None:
    modules = _stat(tmp_path, "Y")
    _takeover(tmp_path, modules, "boot-1").take()
    (modules / "damon_stat" / "parameters" / "enabled").write_text("Y\n")  # rebooted
    after_reboot = _takeover(tmp_path, modules, "boot-2")
    assert not after_reboot.holding()
    assert not after_reboot.record_path.exists()
    assert after_reboot.give_back() is False


def test_a_failed_give_back_keeps_the_record_for_a_later_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = _stat(tmp_path, "Y")
    held = _takeover(tmp_path, modules)
    held.take()

    def busy(value: str) -> None:
        raise errors.SysfsBusyError(
            "/sys/module/damon_stat/parameters/enabled", errno.EBUSY, "busy", value
        )

    monkeypatch.setattr(held, "_write", busy)
    with pytest.raises(errors.SysfsBusyError, match="damon_stat"):
        held.give_back()
    assert held.record_path.exists()
    monkeypatch.undo()
    assert _takeover(tmp_path, modules).give_back() is True
    assert _enabled(modules) == "Y"


def test_a_failed_turn_off_leaves_no_record(tmp_path: Path) -> None:
    modules = tmp_path / "module"
    # A directory where the file should be: every write fails (EISDIR).
    (modules / "damon_stat" / "parameters" / "enabled").mkdir(parents=True)
    held = _takeover(tmp_path, modules)
    with pytest.raises(errors.SysfsError, match="/sys/module/damon_stat/parameters/enabled"):
        held.take()
    assert not held.record_path.exists()


def test_an_unwritable_state_directory_leaves_damon_stat_running(tmp_path: Path) -> None:
    modules = _stat(tmp_path, "Y")
    blocker = tmp_path / "file"
    blocker.write_text("")
    held = takeover.DamonStatTakeover(modules, blocker / "state", "boot-1")
    with pytest.raises(errors.StateDirError, match="left running"):
        held.take()
    assert _enabled(modules) == "Y"


@pytest.mark.parametrize(
    "text", ["", "{}", "[]", '{"version": 2, "boot_id": "b"}', '{"version": 1, "boot_id": 3}']
)
def test_records_of_other_shapes_are_not_records(text: str) -> None:
    assert takeover.parse_record(text) is None


def test_record_round_trip() -> None:
    record = takeover.Record(boot_id="abc")
    assert takeover.parse_record(takeover.render_record(record)) == record
