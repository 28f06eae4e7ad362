"""The recording format: what ``damon-agent run --record`` writes and ``damonctl report`` reads.

JSON lines, documented in docs/recording-format.md. The first line is a header::

    {"format": "damon-k8s-recording", "version": 1, "meta": {...}}

and every following line is one record, told apart by ``type``:

- ``snapshot``: one aggregation's regions, per target, as parallel integer arrays
  (``start``, ``end``, ``nr_accesses``, ``age``), with ``time_us``, ``sample_us``, ``aggr_us``;
- ``scheme_stats``: the cumulative stats of every scheme at ``time_us``;
- ``footprint``: byte counts (rss, vsz, sys_used, ...) at ``time_us``.

Why JSON lines: a recording is appended to while monitoring runs, and each line is flushed
as it is written, so a crash loses at most the record being written; the reader drops a
torn last line (no trailing newline, not valid JSON) and says so in ``Recording.torn_tail``.
Columnar arrays keep a 1000-region snapshot one short line that numpy reads back in one
call, and they hold regions, not pages, so a record's size is bounded by max_nr_regions.

Validation happens at both ends: the writer refuses a snapshot whose regions are not sorted
and disjoint, and the reader raises ``RecordingError`` naming the line number and the field
for anything it cannot take (bad JSON, a missing or mistyped field, an unknown version or
record type). Unknown extra fields inside a known record are ignored, so version 1 can grow
fields without breaking readers; anything else is a new version.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Final

import numpy as np

from damon_agent.core import snapshots
from damon_agent.core.regions import Int64Array
from damon_agent.reports import errors

FORMAT_NAME: Final = "damon-k8s-recording"
FORMAT_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})

# Stats a scheme_stats entry may carry that must be non-negative integers when present.
SCHEME_COUNTERS: Final = (
    "nr_tried",
    "sz_tried",
    "nr_applied",
    "sz_applied",
    "sz_ops_filter_passed",
    "qt_exceeds",
)

RecordingError = errors.RecordingError


@dataclass
class Recording:
    """A recording read back: records of each kind in file order."""

    meta: dict[str, object]
    snapshots: list[snapshots.Snapshot] = field(default_factory=list)
    scheme_stats: list[tuple[int, list[dict[str, object]]]] = field(default_factory=list)
    footprints: list[tuple[int, dict[str, int]]] = field(default_factory=list)
    version: int = FORMAT_VERSION
    # The last line was cut short (the writer died mid-line) and was dropped.
    torn_tail: bool = False

    @property
    def start_us(self) -> int:
        """Time that "relative to the recording's start" counts from.

        ``meta["start_us"]`` when the writer gave it (monitoring began before the first
        snapshot), else the earliest record's time, else 0.
        """
        start = self.meta.get("start_us")
        if isinstance(start, int) and not isinstance(start, bool):
            return start
        times = [s.time_us for s in self.snapshots[:1]]
        times += [t for t, _ in self.scheme_stats[:1]]
        times += [t for t, _ in self.footprints[:1]]
        return min(times) if times else 0

    @property
    def end_us(self) -> int:
        """Time of the latest record (``start_us`` for an empty recording)."""
        times = [s.time_us for s in self.snapshots[-1:]]
        times += [t for t, _ in self.scheme_stats[-1:]]
        times += [t for t, _ in self.footprints[-1:]]
        return max(times) if times else self.start_us


def target_names(meta: Mapping[str, object]) -> dict[int, str]:
    """``meta["targets"]`` as ``{target_id: name}``; entries without both are left out."""
    names: dict[int, str] = {}
    targets = meta.get("targets")
    if isinstance(targets, list):
        for entry in targets:
            if isinstance(entry, dict):
                tid, name = entry.get("target_id"), entry.get("name")
                if isinstance(tid, int) and isinstance(name, str):
                    names[tid] = name
    return names


class RecordingWriter:
    """Appends records to a new recording file, one flushed JSON line each.

    Use as a context manager; ``close()`` is idempotent. Writing after close raises
    ``RecordingError``.
    """

    def __init__(self, path: pathlib.Path, meta: Mapping[str, object]) -> None:
        self.path = path
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "meta": dict(meta)}
        header_line = _dumps(header, what="meta")
        try:
            self._file: IO[str] | None = path.open("w", encoding="utf-8")
        except OSError as err:
            raise RecordingError(f"cannot write recording {path}: {err.strerror or err}") from err
        self._write_line(header_line)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def snapshot(self, snap: snapshots.Snapshot) -> None:
        targets = []
        for index, target in enumerate(snap.targets):
            where = f"snapshot at {snap.time_us} us, targets[{index}]"
            _check_regions(target.start, target.end, target.nr_accesses, target.age, where)
            targets.append(
                {
                    "target_id": int(target.target_id),
                    "start": target.start.tolist(),
                    "end": target.end.tolist(),
                    "nr_accesses": target.nr_accesses.tolist(),
                    "age": target.age.tolist(),
                }
            )
        record = {
            "type": "snapshot",
            "time_us": int(snap.time_us),
            "sample_us": int(snap.sample_us),
            "aggr_us": int(snap.aggr_us),
            "targets": targets,
        }
        self._write_line(_dumps(record, what="snapshot"))

    def scheme_stats(self, time_us: int, stats: Sequence[Mapping[str, object]]) -> None:
        schemes = [dict(entry) for entry in stats]
        for index, entry in enumerate(schemes):
            _check_scheme_entry(entry, f"scheme_stats at {time_us} us, schemes[{index}]")
        record = {"type": "scheme_stats", "time_us": int(time_us), "schemes": schemes}
        self._write_line(_dumps(record, what="scheme_stats"))

    def footprint(self, time_us: int, values: Mapping[str, int]) -> None:
        checked: dict[str, int] = {}
        for name, value in values.items():
            checked[str(name)] = _nonneg_int(value, f"footprint at {time_us} us, values.{name}")
        record = {"type": "footprint", "time_us": int(time_us), "values": checked}
        self._write_line(_dumps(record, what="footprint"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write_line(self, line: str) -> None:
        if self._file is None:
            raise RecordingError(f"recording {self.path} is already closed")
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as err:
            raise RecordingError(
                f"cannot write recording {self.path}: {err.strerror or err}"
            ) from err


def read_recording(path: pathlib.Path) -> Recording:
    """Read and validate a whole recording; ``RecordingError`` names the line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise RecordingError(f"recording {path} does not exist") from err
    except IsADirectoryError as err:
        raise RecordingError(f"recording {path} is a directory, not a file") from err
    except UnicodeDecodeError as err:
        raise RecordingError(f"recording {path} is not UTF-8 text: {err.reason}") from err
    except OSError as err:
        raise RecordingError(f"cannot read recording {path}: {err.strerror or err}") from err
    return parse_recording(text, source=str(path))


def parse_recording(text: str, *, source: str = "<recording>") -> Recording:
    """Parse the text of a recording (see ``read_recording``)."""
    lines = text.split("\n")
    # A complete file ends with "\n", so the final element is empty; anything else there is
    # a last line the writer did not finish.
    tail = lines.pop()
    if not lines and not tail:
        raise RecordingError(f"{source}: empty file, expected a {FORMAT_NAME} header line")
    torn_tail = False
    if tail:
        try:
            json.loads(tail)
        except json.JSONDecodeError:
            torn_tail = True
        else:
            lines.append(tail)
    if not lines:
        raise RecordingError(f"{source}: line 1: incomplete header line")

    recording = _parse_header(lines[0], source)
    recording.torn_tail = torn_tail
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        where = f"{source}: line {number}"
        obj = _loads(line, where)
        kind = obj.get("type")
        if kind == "snapshot":
            recording.snapshots.append(_parse_snapshot(obj, where))
        elif kind == "scheme_stats":
            recording.scheme_stats.append(_parse_scheme_stats(obj, where))
        elif kind == "footprint":
            recording.footprints.append(_parse_footprint(obj, where))
        elif kind is None:
            raise RecordingError(f"{where}: field 'type' is missing")
        else:
            raise RecordingError(
                f"{where}: field 'type': unknown record type {kind!r} "
                "(expected snapshot, scheme_stats or footprint)"
            )
    return recording


def _parse_header(line: str, source: str) -> Recording:
    where = f"{source}: line 1"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise RecordingError(
            f"{where}: not a {FORMAT_NAME} file (header is not JSON: {err.msg})"
        ) from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise RecordingError(
            f"{where}: field 'format': not a {FORMAT_NAME} file "
            f'(header must be {{"format": "{FORMAT_NAME}", "version": N, ...}})'
        )
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordingError(f"{where}: field 'version': expected an integer, got {version!r}")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise RecordingError(
            f"{where}: field 'version': unsupported recording version {version} "
            f"(this damonctl reads version {supported}; a newer damon-k8s wrote this file?)"
        )
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise RecordingError(f"{where}: field 'meta': expected an object, got {_kind(meta)}")
    return Recording(meta=meta, version=version)


def _parse_snapshot(obj: dict[str, object], where: str) -> snapshots.Snapshot:
    time_us = _int_field(obj, "time_us", where)
    sample_us = _int_field(obj, "sample_us", where, minimum=1)
    aggr_us = _int_field(obj, "aggr_us", where, minimum=1)
    raw_targets = obj.get("targets")
    if not isinstance(raw_targets, list):
        raise RecordingError(f"{where}: field 'targets': expected a list, got {_kind(raw_targets)}")
    targets = []
    for index, raw in enumerate(raw_targets):
        prefix = f"targets[{index}]"
        if not isinstance(raw, dict):
            raise RecordingError(f"{where}: field '{prefix}': expected an object, got {_kind(raw)}")
        target_id = _int_field(raw, "target_id", where, prefix=prefix)
        columns = [
            _int_array(raw, name, where, prefix) for name in ("start", "end", "nr_accesses", "age")
        ]
        start, end, nr_accesses, age = columns
        try:
            _check_regions(start, end, nr_accesses, age, prefix)
        except RecordingError as err:
            raise RecordingError(f"{where}: {err}") from None
        targets.append(
            snapshots.TargetSnapshot(
                target_id=target_id, start=start, end=end, nr_accesses=nr_accesses, age=age
            )
        )
    return snapshots.Snapshot(
        time_us=time_us, sample_us=sample_us, aggr_us=aggr_us, targets=tuple(targets)
    )


def _parse_scheme_stats(obj: dict[str, object], where: str) -> tuple[int, list[dict[str, object]]]:
    time_us = _int_field(obj, "time_us", where)
    raw = obj.get("schemes")
    if not isinstance(raw, list):
        raise RecordingError(f"{where}: field 'schemes': expected a list, got {_kind(raw)}")
    entries: list[dict[str, object]] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise RecordingError(
                f"{where}: field 'schemes[{index}]': expected an object, got {_kind(entry)}"
            )
        try:
            _check_scheme_entry(entry, f"schemes[{index}]")
        except RecordingError as err:
            raise RecordingError(f"{where}: {err}") from None
        entries.append(entry)
    return time_us, entries


def _parse_footprint(obj: dict[str, object], where: str) -> tuple[int, dict[str, int]]:
    time_us = _int_field(obj, "time_us", where)
    raw = obj.get("values")
    if not isinstance(raw, dict):
        raise RecordingError(f"{where}: field 'values': expected an object, got {_kind(raw)}")
    values: dict[str, int] = {}
    for name, value in raw.items():
        try:
            values[name] = _nonneg_int(value, f"values.{name}")
        except RecordingError as err:
            raise RecordingError(f"{where}: {err}") from None
    return time_us, values


def _check_regions(
    start: Int64Array, end: Int64Array, nr_accesses: Int64Array, age: Int64Array, where: str
) -> None:
    """Regions must be non-empty, sorted, disjoint, with non-negative counters."""
    n = start.size
    for name, column in (("end", end), ("nr_accesses", nr_accesses), ("age", age)):
        if column.size != n:
            raise RecordingError(
                f"field '{where}.{name}': has {column.size} entries but 'start' has {n}"
            )
    if n == 0:
        return
    empty = np.flatnonzero(end <= start)
    if empty.size:
        i = int(empty[0])
        raise RecordingError(
            f"field '{where}.end[{i}]': region {i} is empty or inverted "
            f"(start {int(start[i]):#x}, end {int(end[i]):#x})"
        )
    overlap = np.flatnonzero(start[1:] < end[:-1])
    if overlap.size:
        i = int(overlap[0]) + 1
        raise RecordingError(
            f"field '{where}.start[{i}]': region {i} starts at {int(start[i]):#x}, before "
            f"region {i - 1} ends at {int(end[i - 1]):#x} (regions must be sorted and disjoint)"
        )
    for name, column in (("start", start), ("nr_accesses", nr_accesses), ("age", age)):
        negative = np.flatnonzero(column < 0)
        if negative.size:
            i = int(negative[0])
            raise RecordingError(f"field '{where}.{name}[{i}]': must be >= 0, got {column[i]}")


def _check_scheme_entry(entry: Mapping[str, object], where: str) -> None:
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise RecordingError(f"field '{where}.name': expected a string, got {_kind(name)}")
    for counter in SCHEME_COUNTERS:
        if counter in entry:
            _nonneg_int(entry[counter], f"{where}.{counter}")


def _int_field(
    obj: Mapping[str, object], name: str, where: str, *, prefix: str = "", minimum: int = 0
) -> int:
    label = f"{prefix}.{name}" if prefix else name
    if name not in obj:
        raise RecordingError(f"{where}: field '{label}' is missing")
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordingError(f"{where}: field '{label}': expected an integer, got {_kind(value)}")
    if value < minimum:
        raise RecordingError(f"{where}: field '{label}': must be >= {minimum}, got {value}")
    return value


def _int_array(obj: Mapping[str, object], name: str, where: str, prefix: str) -> Int64Array:
    label = f"{prefix}.{name}"
    if name not in obj:
        raise RecordingError(f"{where}: field '{label}' is missing")
    raw = obj[name]
    if not isinstance(raw, list):
        raise RecordingError(f"{where}: field '{label}': expected a list, got {_kind(raw)}")
    if not raw:
        return np.zeros(0, dtype=np.int64)
    # Let numpy infer the type first: floats, booleans, strings or integers beyond int64
    # must be refused, not silently converted.
    array = np.asarray(raw)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        bad = next((v for v in raw if not isinstance(v, int) or isinstance(v, bool)), raw[0])
        raise RecordingError(
            f"{where}: field '{label}': expected a list of integers, found {bad!r}"
        )
    if array.dtype.kind == "u" and int(array.max()) > np.iinfo(np.int64).max:
        raise RecordingError(f"{where}: field '{label}': value beyond 64-bit signed range")
    return array.astype(np.int64)


def _nonneg_int(value: object, label: str) -> int:
    if isinstance(value, (np.integer,)):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordingError(f"field '{label}': expected an integer, got {_kind(value)}")
    if value < 0:
        raise RecordingError(f"field '{label}': must be >= 0, got {value}")
    return value


def _loads(line: str, where: str) -> dict[str, object]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise RecordingError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(obj, dict):
        raise RecordingError(f"{where}: expected a JSON object, got {_kind(obj)}")
    return obj


def _dumps(obj: object, *, what: str) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as err:
        raise RecordingError(f"cannot record {what}: {err}") from err


def _json_default(value: object) -> object:
    # Counters and sizes often come straight from numpy arrays.
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating) and math.isfinite(float(value)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null or missing)"
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
