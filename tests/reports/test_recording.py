"""Round trips of the recording format and the errors for every kind of bad input."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from reports_support import make_snapshot

from damon_agent.core import snapshots
from damon_agent.reports import errors, recording

HEADER = '{"format":"damon-k8s-recording","version":1,"meta":{}}'


def _assert_same(a: snapshots.Snapshot, b: snapshots.Snapshot) -> None:
    assert (a.time_us, a.sample_us, a.aggr_us) == (b.time_us, b.sample_us, b.aggr_us)
    assert len(a.targets) == len(b.targets)
    for x, y in zip(a.targets, b.targets, strict=True):
        assert x.target_id == y.target_id
        for name in ("start", "end", "nr_accesses", "age"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
            assert getattr(y, name).dtype == np.int64


def test_round_trip_keeps_every_record(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    first = make_snapshot(100_000, [(0, 4096, 3, 1), (4096, 1 << 40, 0, 7)], [(8192, 12288, 20, 0)])
    second = make_snapshot(200_000, [(0, 1 << 40, 1, 2)], [], sample_us=10_000, aggr_us=200_000)
    meta = {"backend": "sim", "seed": 7, "start_us": 0}
    stats = [{"name": "cold", "action": "pageout", "nr_tried": np.int64(4), "sz_applied": 8192}]
    with recording.RecordingWriter(path, meta) as writer:
        writer.snapshot(first)
        writer.scheme_stats(150_000, stats)
        writer.snapshot(second)
        writer.footprint(160_000, {"rss": 5 << 20, "vsz": 1 << 30})

    rec = recording.read_recording(path)
    assert rec.meta == meta
    assert rec.version == 1
    assert not rec.torn_tail
    assert len(rec.snapshots) == 2
    _assert_same(first, rec.snapshots[0])
    _assert_same(second, rec.snapshots[1])
    assert rec.scheme_stats == [
        (150_000, [{"name": "cold", "action": "pageout", "nr_tried": 4, "sz_applied": 8192}])
    ]
    assert rec.footprints == [(160_000, {"rss": 5 << 20, "vsz": 1 << 30})]
    assert rec.start_us == 0
    assert rec.end_us == 200_000


def test_header_is_the_documented_first_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    recording.RecordingWriter(path, {"k": "v"}).close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {
        "format": "damon-k8s-recording",
        "version": 1,
        "meta": {"k": "v"},
    }


def test_each_record_is_on_disk_before_close(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    with recording.RecordingWriter(path, {}) as writer:
        writer.snapshot(make_snapshot(100_000, [(0, 4096, 1, 0)]))
        # A reader (or a crash) now sees the header and the snapshot, complete.
        assert len(recording.read_recording(path).snapshots) == 1
        writer.footprint(200_000, {"rss": 1})
        assert len(recording.read_recording(path).footprints) == 1


def test_start_defaults_to_first_record(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    with recording.RecordingWriter(path, {}) as writer:
        writer.footprint(50_000_000, {"rss": 1})
        writer.snapshot(make_snapshot(50_100_000, [(0, 4096, 1, 0)]))
    assert recording.read_recording(path).start_us == 50_000_000


def test_torn_last_line_is_dropped_and_flagged(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    with recording.RecordingWriter(path, {}) as writer:
        writer.snapshot(make_snapshot(100_000, [(0, 4096, 1, 0)]))
    with path.open("a") as f:
        f.write('{"type":"snapshot","time_us":2000')  # the writer died mid-line
    rec = recording.read_recording(path)
    assert rec.torn_tail
    assert [s.time_us for s in rec.snapshots] == [100_000]


def test_complete_last_line_without_newline_is_kept(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(HEADER + '\n{"type":"footprint","time_us":5,"values":{"rss":3}}')
    rec = recording.read_recording(path)
    assert not rec.torn_tail
    assert rec.footprints == [(5, {"rss": 3})]


def test_target_names_from_meta() -> None:
    meta: dict[str, object] = {
        "targets": [{"target_id": 0, "name": "app"}, {"target_id": 1}, "junk"]
    }
    assert recording.target_names(meta) == {0: "app"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", r"empty file"),
        ("not json\n", r"line 1: not a damon-k8s-recording file \(header is not JSON"),
        ('{"format":"other","version":1}\n', r"line 1: field 'format'"),
        (
            '{"format":"damon-k8s-recording","version":2,"meta":{}}\n',
            r"line 1: field 'version': unsupported recording version 2",
        ),
        (
            '{"format":"damon-k8s-recording","version":"1"}\n',
            r"line 1: field 'version': expected an integer",
        ),
        (
            '{"format":"damon-k8s-recording","version":1,"meta":[]}\n',
            r"line 1: field 'meta': expected an object",
        ),
        (HEADER + "\n{oops\n" + '{"type":"footprint"}\n', r"line 2: not valid JSON"),
        (HEADER + "\n[1,2]\n", r"line 2: expected a JSON object, got a list"),
        (HEADER + '\n{"time_us":1}\n', r"line 2: field 'type' is missing"),
        (HEADER + '\n{"type":"bogus"}\n', r"line 2: field 'type': unknown record type 'bogus'"),
        (
            HEADER + '\n{"type":"snapshot","sample_us":5,"aggr_us":10,"targets":[]}\n',
            r"line 2: field 'time_us' is missing",
        ),
        (
            HEADER
            + '\n{"type":"snapshot","time_us":1.5,"sample_us":5,"aggr_us":10,"targets":[]}\n',
            r"line 2: field 'time_us': expected an integer, got a number \(1.5\)",
        ),
        (
            HEADER + '\n{"type":"snapshot","time_us":1,"sample_us":0,"aggr_us":10,"targets":[]}\n',
            r"line 2: field 'sample_us': must be >= 1, got 0",
        ),
        (
            HEADER + '\n{"type":"snapshot","time_us":1,"sample_us":5,"aggr_us":10}\n',
            r"line 2: field 'targets': expected a list",
        ),
        (
            HEADER + '\n\n{"type":"snapshot","time_us":1,"sample_us":5,"aggr_us":10,"targets":'
            '[{"target_id":0,"start":[0],"end":[10],"nr_accesses":["x"],"age":[0]}]}\n',
            r"line 3: field 'targets\[0\].nr_accesses': expected a list of integers, found 'x'",
        ),
        (
            HEADER + '\n{"type":"snapshot","time_us":1,"sample_us":5,"aggr_us":10,"targets":'
            '[{"target_id":0,"start":[0,5],"end":[10],"nr_accesses":[1,1],"age":[0,0]}]}\n',
            r"line 2: field 'targets\[0\].end': has 1 entries but 'start' has 2",
        ),
        (
            HEADER + '\n{"type":"snapshot","time_us":1,"sample_us":5,"aggr_us":10,"targets":'
            '[{"target_id":0,"start":[0,5],"end":[10,20],"nr_accesses":[1,1],"age":[0,0]}]}\n',
            r"line 2: field 'targets\[0\].start\[1\]': region 1 starts at 0x5, before region 0",
        ),
        (
            HEADER + '\n{"type":"snapshot","time_us":1,"sample_us":5,"aggr_us":10,"targets":'
            '[{"target_id":0,"start":[10],"end":[10],"nr_accesses":[1],"age":[0]}]}\n',
            r"line 2: field 'targets\[0\].end\[0\]': region 0 is empty or inverted",
        ),
        (
            HEADER + '\n{"type":"snapshot","time_us":1,"sample_us":5,"aggr_us":10,"targets":'
            '[{"target_id":0,"start":[0],"end":[10],"nr_accesses":[-1],"age":[0]}]}\n',
            r"line 2: field 'targets\[0\].nr_accesses\[0\]': must be >= 0, got -1",
        ),
        (
            HEADER + '\n{"type":"snapshot","time_us":1,"sample_us":5,"aggr_us":10,"targets":'
            '[{"start":[0],"end":[10],"nr_accesses":[1],"age":[0]}]}\n',
            r"line 2: field 'targets\[0\].target_id' is missing",
        ),
        (
            HEADER
            + '\n{"type":"scheme_stats","time_us":1,"schemes":[{"name":"a","nr_tried":-2}]}\n',
            r"line 2: field 'schemes\[0\].nr_tried': must be >= 0, got -2",
        ),
        (
            HEADER + '\n{"type":"scheme_stats","time_us":1,"schemes":[{"name":3}]}\n',
            r"line 2: field 'schemes\[0\].name': expected a string",
        ),
        (
            HEADER + '\n{"type":"footprint","time_us":1,"values":{"rss":"big"}}\n',
            r"line 2: field 'values.rss': expected an integer, got a string",
        ),
    ],
)
def test_bad_input_names_line_and_field(
    tmp_path: pathlib.Path, content: str, expected: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(errors.RecordingError, match=expected):
        recording.read_recording(path)


def test_recording_error_is_a_report_error() -> None:
    assert issubclass(recording.RecordingError, errors.ReportError)


def test_missing_file_and_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.RecordingError, match="does not exist"):
        recording.read_recording(tmp_path / "nope.jsonl")
    with pytest.raises(errors.RecordingError, match="is a directory"):
        recording.read_recording(tmp_path)


def test_not_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(errors.RecordingError, match="not UTF-8"):
        recording.read_recording(path)


def test_writer_refuses_overlapping_regions(tmp_path: pathlib.Path) -> None:
    with (
        recording.RecordingWriter(tmp_path / "r.jsonl", {}) as writer,
        pytest.raises(errors.RecordingError, match=r"targets\[0\].start\[1\]"),
    ):
        writer.snapshot(make_snapshot(1, [(0, 100, 0, 0), (50, 200, 0, 0)]))


def test_writer_refuses_unserialisable_meta(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.RecordingError, match="cannot record meta"):
        recording.RecordingWriter(tmp_path / "r.jsonl", {"x": object()})


def test_writer_refuses_negative_footprint(tmp_path: pathlib.Path) -> None:
    with (
        recording.RecordingWriter(tmp_path / "r.jsonl", {}) as writer,
        pytest.raises(errors.RecordingError, match=r"values.rss': must be >= 0"),
    ):
        writer.footprint(1, {"rss": -1})


def test_writer_after_close_and_unwritable_path(tmp_path: pathlib.Path) -> None:
    writer = recording.RecordingWriter(tmp_path / "r.jsonl", {})
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(errors.RecordingError, match="already closed"):
        writer.footprint(1, {"rss": 1})
    with pytest.raises(errors.RecordingError, match="cannot write recording"):
        recording.RecordingWriter(tmp_path / "missing-dir" / "r.jsonl", {})
