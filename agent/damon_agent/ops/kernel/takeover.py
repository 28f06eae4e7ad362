"""The opt-in takeover of DAMON_STAT: off while the agent runs, back on when it stops.

DAMON_STAT (Linux 6.17) runs exclusively, and Debian's kernels from 6.17 on enable it at
boot, so on such a node no kdamond of the agent can start (``holders``). An admin who
wants the agent there can let it turn DAMON_STAT off (agent flag
``--take-over-damon-stat``, chart value ``agent.takeOverDamonStat``); the agent then
exports the figures DAMON_STAT gave from its own kdamond, and turns DAMON_STAT back on
when it stops. Without the opt-in nothing here writes.

The promise to turn it back on must survive a crash, so it is a file in the agent's state
directory (``damon_stat.json``, the boot id in it), written *before* the module is turned
off: a record means "this agent turned DAMON_STAT off during this boot and owes turning
it back on". Then:

- ``take`` (opt-in, at start): DAMON_STAT on -> record, write ``N`` (the record is
  removed again if the write fails). Off with our record (a restart after a crash): still
  ours, nothing written. Off without a record (an admin turned it off): not ours to give
  back, nothing recorded. Absent (kernels before 6.17, or built without it): nothing.
- ``give_back`` (at stop, and at a start without the opt-in that finds a record left by
  an opted-in run that crashed): our record and DAMON_STAT off -> write ``Y``, then drop
  the record. On already (an admin turned it back on): drop the record. The write fails
  with EBUSY while any kdamond runs (the agent stops its own first; a foreign one may
  still run): the error is raised and the record kept, so a later start retries.
- A record of another boot is stale (a reboot restored DAMON_STAT's build default) and
  is dropped.
- While it runs, the agent also remembers that it owes DAMON_STAT back, so a record
  deleted under it (the state directory removed) still gives it back at stop; ``restore``
  writes such a record again, for a successor after a crash.

Only ``damon_stat``'s ``enabled`` file is ever written: the other modules (DAMON_RECLAIM,
DAMON_LRU_SORT) are an admin's explicit choice and are only reported (``holders``).
Errors: ``SysfsError`` subclasses naming the module file (EBUSY: ``SysfsBusyError``), and
``StateDirError`` when the record cannot be written (then nothing was turned off).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from damon_agent.ops.kernel import errors, holders
from damon_agent.ops.kernel import sysfs as sysfs_io

STATE_FILE: Final = "damon_stat.json"
STATE_VERSION: Final = 1


class Taken(StrEnum):
    """What ``take`` found and did."""

    TURNED_OFF = "turned-off"  # it ran; the agent turned it off and recorded so
    STILL_OURS = "still-ours"  # off, by this agent's own record (a restart)
    ALREADY_OFF = "already-off"  # off, and not by this agent: nothing to give back
    ABSENT = "absent"  # this kernel has no DAMON_STAT


@dataclass(frozen=True)
class Record:
    boot_id: str


def parse_record(text: str) -> Record | None:
    """The record in ``text``, None when it is not one this version wrote."""
    try:
        raw = json.loads(text)
        if raw.get("version") != STATE_VERSION or not isinstance(raw.get("boot_id"), str):
            return None
        return Record(boot_id=raw["boot_id"])
    except (ValueError, AttributeError):
        return None


def render_record(record: Record) -> str:
    return json.dumps({"version": STATE_VERSION, "boot_id": record.boot_id}) + "\n"


class DamonStatTakeover:
    """DAMON_STAT's ``enabled`` file and this agent's record of turning it off."""

    def __init__(self, module_root: Path, state_dir: Path, boot_id: str) -> None:
        self._enabled = module_root / holders.DAMON_STAT.module / "parameters" / "enabled"
        self._record = state_dir / STATE_FILE
        self._boot_id = boot_id
        # This process knows it owes DAMON_STAT back, whatever happens to the record.
        self._owed = False

    @property
    def record_path(self) -> Path:
        return self._record

    def present(self) -> bool:
        return self._enabled.exists()

    def running(self) -> bool:
        try:
            return holders.parse_enabled(self._enabled.read_text(encoding="ascii"))
        except OSError as err:
            raise sysfs_io.raise_for(err, holders.DAMON_STAT.enabled_path, None) from err

    def holding(self) -> bool:
        """Whether this agent turned DAMON_STAT off during this boot and owes it back."""
        if self._owed:
            return True
        try:
            record = parse_record(self._record.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return False  # no record (``take`` says so if the directory is unusable)
        except OSError as err:
            raise errors.StateDirError(f"cannot read {self._record}: {err.strerror}") from err
        if record is None or record.boot_id != self._boot_id:
            self._record.unlink(missing_ok=True)  # another boot's: DAMON_STAT was reset
            return False
        self._owed = True
        return True

    def take(self) -> Taken:
        """Turn DAMON_STAT off if it runs, recording it first (module docstring)."""
        if not self.present():
            self._record.unlink(missing_ok=True)
            return Taken.ABSENT
        ours = self.holding()
        if not self.running():
            return Taken.STILL_OURS if ours else Taken.ALREADY_OFF
        self._save()
        try:
            self._write("N")
        except errors.SysfsError:
            if not ours:
                self._record.unlink(missing_ok=True)
            raise
        self._owed = True
        return Taken.TURNED_OFF

    def give_back(self) -> bool:
        """Turn DAMON_STAT back on if this agent turned it off; True when it wrote ``Y``."""
        if not self.holding():
            return False
        wrote = False
        if self.present() and not self.running():
            self._write("Y")  # raises with the record kept: a later start retries
            wrote = True
        self._record.unlink(missing_ok=True)
        self._owed = False
        return wrote

    def restore(self) -> bool:
        """Write the record again if it vanished while DAMON_STAT is owed back (the state
        directory deleted); True when it did. ``StateDirError`` if it cannot."""
        if not self._owed or self._record.is_file():
            return False
        self._save(
            "so only this agent, not a successor after a crash, will turn DAMON_STAT back on"
        )
        return True

    def _save(
        self,
        consequence: str = "so DAMON_STAT was left running (choose another with --state-dir)",
    ) -> None:
        directory = self._record.parent
        tmp = directory / f".{STATE_FILE}.{os.getpid()}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp.write_text(render_record(Record(self._boot_id)), encoding="utf-8")
            os.replace(tmp, self._record)
        except OSError as err:
            with contextlib.suppress(OSError):  # a full disk keeps no half-written copy
                tmp.unlink(missing_ok=True)
            raise errors.StateDirError(
                f"state directory {directory} is not writable ({err.strerror}); it records "
                f"that this agent turned DAMON_STAT off, {consequence}"
            ) from err

    def _write(self, value: str) -> None:
        try:
            self._enabled.write_text(value, encoding="ascii")
        except OSError as err:
            raise sysfs_io.raise_for(err, holders.DAMON_STAT.enabled_path, value) from err
