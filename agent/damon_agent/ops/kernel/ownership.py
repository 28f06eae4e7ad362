"""Which kdamonds the agent created, remembered across crashes, and what "not touching" means.

The kernel's kdamonds are an indexed list, ``kdamonds/0 .. N-1``, sized by writing
``nr_kdamonds``. Two kernel facts shape the rules:

1. Writing ``nr_kdamonds`` removes *every* kdamond directory and creates N fresh ones: it
   wipes the staged configuration of all of them, not only the ones added or removed.
2. The write fails with EBUSY while any kdamond runs.

So "never touch a kdamond we did not create" means, for this agent:

- It never writes any file below ``kdamonds/<i>`` for an index it does not own.
- It never writes ``nr_kdamonds`` while a kdamond it does not own exists, running or
  staged: adding its own kdamond would wipe a staged foreign one (and fails anyway while a
  foreign one runs). It raises ``ForeignKdamondsError`` instead, which the agent reports
  as a status condition. When foreign kdamonds appear after the agent's, the agent still
  commits into and stops its own, but leaves its stopped directories in place rather
  than shrink the list under them; a later run cleans them once it is alone again.
- Reading foreign kdamonds' files (``state``, ``pid``, ``avail_operations``) is allowed.

What the agent owns is recorded in a JSON state file under an injected state directory
(``kdamonds.json``): for each kdamond its index, the pid of its thread when it was turned
on, and a fingerprint of a few staged files; plus the ``nr_kdamonds`` it left and the
boot id. On restart (``verify``) a recorded kdamond is still the agent's only if:

- the boot id is the same (a reboot clears DAMON; the records are dropped);
- ``nr_kdamonds`` is what the agent left (otherwise someone resized the list, which
  destroyed the agent's kdamonds; the indices now belong to whoever did it);
- if it runs, its pid is the recorded one (a kdamond started by someone else at the
  same index has a new thread); that alone proves it, whatever is staged;
- if it is off (or its pid was not yet recorded), its fingerprint files still read as
  recorded (a staged foreign configuration differs).

Every step is recorded before it is taken, so a crash (``kill -9``) anywhere leaves only
kdamonds the next run recognises:

- before resizing the list the record already names the new indices (pid -1, no
  fingerprint) and the size it is leaving (``nr_before``): if the list still has that
  size, the resize never happened and the record of before holds;
- before turning a kdamond on, the record holds its staged fingerprint with pid -1: a
  running kdamond recorded so is ours when its fingerprint matches (the crash came
  between ``on`` and recording the thread's pid);
- before staging a commit, the record holds the new fingerprint: the staged files keep
  what was written whether the kernel takes the commit or refuses it (a refusal before
  6.15 also turns the kdamond off).

The file is for the agent's successor; while it runs, the agent trusts what it last
recorded, which it keeps in memory (it is the record's one writer: a successor starts only
after it ends). So a state directory deleted under a running agent, or one too full to take
a new record, loses it nothing: ``restore`` writes a vanished record (or one whose write
failed) again, as the daemon asks at every status build, and a record that cannot be
written raises
``StateDirError`` naming the file and the reason, while the kdamonds stay known.

A race remains that no file can close: another tool may resize the list between the
agent's check and its own ``nr_kdamonds`` write. Tools that share the host must
serialise on their own; the agent keeps the window to two syscalls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from damon_agent.ops.kernel import errors
from damon_agent.ops.kernel import sysfs as sysfs_io
from damon_agent.ops.kernel import writes as writes_mod

STATE_FILE: Final = "kdamonds.json"
STATE_VERSION: Final = 1

# Staged files that identify a configuration and that the kernel never rewrites by itself
# (sample_us/aggr_us are rewritten by update_tuned_intervals, so they are left out).
_FINGERPRINT_SUFFIXES: Final = (
    "/operations",
    "/update_us",
    "/nr_regions/min",
    "/nr_regions/max",
    "/nr_schemes",
    "/action",
    "/start",
    "/end",
)
_FINGERPRINT_LIMIT: Final = 16


@dataclass(frozen=True)
class OwnedKdamond:
    index: int
    pid: int
    fingerprint: dict[str, str] = field(default_factory=dict)


@dataclass
class OwnedState:
    boot_id: str
    nr_kdamonds: int
    kdamonds: dict[int, OwnedKdamond] = field(default_factory=dict)
    # While a resize of the list is under way: the size it is leaving.
    nr_before: int | None = None


def fingerprint(writes: list[writes_mod.Write]) -> dict[str, str]:
    """A few identifying (path, value) pairs of a staged configuration."""
    picked: dict[str, str] = {}
    for one in writes:
        if one.path.endswith(_FINGERPRINT_SUFFIXES) and "/tried_regions/" not in one.path:
            picked[one.path] = one.value
        if len(picked) >= _FINGERPRINT_LIMIT:
            break
    return picked


class Ownership:
    """The state file, and verification of its records against the live tree."""

    def __init__(self, state_dir: Path, boot_id: str) -> None:
        self._path = state_dir / STATE_FILE
        self._boot_id = boot_id
        # What this process last recorded (or read): the truth while it runs, whatever
        # happens to the file (module docstring).
        self._known: OwnedState | None = None
        self._unsaved = False  # the last write of it failed

    @property
    def path(self) -> Path:
        return self._path

    def check_writable(self) -> None:
        """Fail before any kernel write if the record could not be saved afterwards: a
        kdamond made without a record would look foreign to every later run."""
        directory = self._path.parent
        probe = directory / f".{STATE_FILE}.probe-{os.getpid()}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe.write_text("", encoding="utf-8")
            probe.unlink()
        except OSError as err:
            raise errors.StateDirError(
                f"state directory {directory} is not writable ({err.strerror}); it records "
                "which kdamonds this agent made, so the kernel was left untouched (choose "
                "another with --state-dir or DAMON_AGENT_STATE_DIR)"
            ) from err

    def load(self) -> OwnedState:
        """The recorded state; an empty one when there is none or it is of another boot.

        The file is read once; later loads return what this process last saved, so a
        record deleted or left stale by a failed write does not make its kdamonds foreign.
        """
        if self._known is not None:
            return _copy(self._known)
        self._known = self._read()
        return _copy(self._known)

    def _read(self) -> OwnedState:
        empty = OwnedState(boot_id=self._boot_id, nr_kdamonds=0)
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as err:
            raise errors.OwnershipError(f"cannot read ownership state {self._path}: {err}") from err
        try:
            if raw["version"] != STATE_VERSION or raw["boot_id"] != self._boot_id:
                return empty
            kdamonds = {
                int(entry["index"]): OwnedKdamond(
                    index=int(entry["index"]),
                    pid=int(entry["pid"]),
                    fingerprint={str(k): str(v) for k, v in entry["fingerprint"].items()},
                )
                for entry in raw["kdamonds"]
            }
            nr_before = raw.get("nr_before")
            return OwnedState(
                boot_id=self._boot_id,
                nr_kdamonds=int(raw["nr_kdamonds"]),
                kdamonds=kdamonds,
                nr_before=None if nr_before is None else int(nr_before),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise errors.OwnershipError(
                f"ownership state {self._path} is malformed ({err!r}); remove it after "
                "checking /sys/kernel/mm/damon/admin/kdamonds by hand"
            ) from err

    def save(self, state: OwnedState) -> None:
        """Write atomically (temp file + rename), so a crash never leaves half a record.

        Kept in memory first: when the file cannot be written (``StateDirError``, naming
        it and why), this process still knows its kdamonds, and the next save or
        ``restore`` writes them all.
        """
        self._known = _copy(state)
        self._unsaved = True
        try:
            self._write(state)
            self._unsaved = False
        except OSError as err:
            raise errors.StateDirError(
                f"cannot record which kdamonds this agent made in {self._path} "
                f"({err.strerror or err}); the agent still knows them, but a successor "
                "would take them for someone else's"
            ) from err

    def restore(self) -> bool:
        """Write the record again if it vanished while kdamonds of this process run (the
        state directory deleted) or its last write failed (a full disk); True when it
        did. ``StateDirError`` if it cannot."""
        known = self._known
        if known is None or not (self._unsaved or (known.kdamonds and not self._path.is_file())):
            return False
        self.save(known)
        return True

    def _write(self, state: OwnedState) -> None:
        if not state.kdamonds:
            self._path.unlink(missing_ok=True)
            return
        payload = {
            "version": STATE_VERSION,
            "boot_id": state.boot_id,
            "nr_kdamonds": state.nr_kdamonds,
            **({} if state.nr_before is None else {"nr_before": state.nr_before}),
            "kdamonds": [
                {"index": k.index, "pid": k.pid, "fingerprint": k.fingerprint}
                for k in sorted(state.kdamonds.values(), key=lambda k: k.index)
            ],
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, self._path)
        except OSError:
            with contextlib.suppress(OSError):  # a full disk keeps no half-written copy
                tmp.unlink(missing_ok=True)
            raise

    def verify(self, fs: sysfs_io.SysfsIO) -> OwnedState:
        """The recorded kdamonds that are provably still the agent's (module docstring)."""
        state = self.load()
        live_nr = sysfs_io.read_int(fs, "kdamonds/nr_kdamonds")
        # A crash between recording a resize and making it: the list has its old size,
        # and the indices below it are the ones the record kept (their configuration,
        # wiped or not, is checked below like any other).
        resize_not_made = state.nr_before is not None and live_nr == state.nr_before
        if live_nr != state.nr_kdamonds and not resize_not_made:
            return OwnedState(boot_id=self._boot_id, nr_kdamonds=live_nr)
        kept = {
            index: owned
            for index, owned in state.kdamonds.items()
            if index < live_nr and still_ours(fs, owned)
        }
        return OwnedState(boot_id=self._boot_id, nr_kdamonds=live_nr, kdamonds=kept)


def _copy(state: OwnedState) -> OwnedState:
    """A copy its users may change without changing the one kept in memory."""
    return dataclasses.replace(state, kdamonds=dict(state.kdamonds))


def still_ours(fs: sysfs_io.SysfsIO, owned: OwnedKdamond) -> bool:
    base = f"kdamonds/{owned.index}"
    try:
        # pid -1 was recorded just before turning on: then only the staged fingerprint can
        # tell our thread from one someone else configured and started there.
        proven_by_fingerprint = owned.pid == -1 and bool(owned.fingerprint)
        running = fs.read(f"{base}/state") == "on"
        if running and owned.pid != -1:
            # The thread the agent started still runs there (pids are not reused while it
            # lives), whatever is staged: a commit cut short by a crash leaves it half
            # written, and it is still the agent's to stop.
            return sysfs_io.read_int(fs, f"{base}/pid") == owned.pid
        if (
            running
            and sysfs_io.read_int(fs, f"{base}/pid") != owned.pid
            and not proven_by_fingerprint
        ):
            return False
        return all(fs.read(f"{base}/{path}") == value for path, value in owned.fingerprint.items())
    except errors.SysfsError:
        return False


def foreign_indices(nr_kdamonds: int, owned: Mapping[int, OwnedKdamond]) -> list[int]:
    return [i for i in range(nr_kdamonds) if i not in owned]


def read_boot_id(proc_root: Path = Path("/proc")) -> str:
    try:
        return (proc_root / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
