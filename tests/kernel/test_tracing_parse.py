"""The tracefs snapshot source's pure parts, and its failures on a tree that is not tracefs.

``RECORDED`` is ``trace_pipe`` text as the 6.18 host printed it for a paddr kdamond (a
private instance): two aggregations, of 2 then 4 regions. The other
inputs are derived from it (cut, reordered, given other targets) in each test.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from damon_agent.cli import daemon as cli_daemon
from damon_agent.core import attrs
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver, errors, reading, tracing
from damon_agent.ops.kernel import fake as fake_sysfs

RECORDED = (
    b"       kdamond.0-26298   [001] ..... 15092.193176: damon_aggregated: target_id=0 "
    b"nr_regions=2 1048576-3221225472: 0 1\n"
    b"       kdamond.0-26298   [001] ..... 15092.193177: damon_aggregated: target_id=0 "
    b"nr_regions=2 4294967296-26843545600: 0 1\n"
    b"       kdamond.0-26298   [001] ..... 15092.295547: damon_aggregated: target_id=0 "
    b"nr_regions=4 1048576-2255171584: 0 2\n"
    b"       kdamond.0-26298   [001] ..... 15092.295548: damon_aggregated: target_id=0 "
    b"nr_regions=4 2255171584-3221225472: 0 2\n"
    b"       kdamond.0-26298   [001] ..... 15092.295548: damon_aggregated: target_id=0 "
    b"nr_regions=4 4294967296-22333829120: 0 2\n"
    b"       kdamond.0-26298   [000] ..... 15092.295551: damon_aggregated: target_id=0 "
    b"nr_regions=4 22333829120-26843545600: 3 0\n"
)
LINES = RECORDED.splitlines(keepends=True)
FIRST = reading.RegionColumns(
    start=[1048576, 4294967296], end=[3221225472, 26843545600], nr_accesses=[0, 0], age=[1, 1]
)
SECOND = reading.RegionColumns(
    start=[1048576, 2255171584, 4294967296, 22333829120],
    end=[2255171584, 3221225472, 22333829120, 26843545600],
    nr_accesses=[0, 0, 0, 3],
    age=[2, 2, 2, 0],
)


def _fed(*chunks: bytes) -> tracing.Assembler:
    """An assembler fed ``chunks``, the i-th read at time i (us)."""
    assembler = tracing.Assembler()
    for now_us, chunk in enumerate(chunks):
        assembler.feed(chunk, now_us)
    return assembler


def test_recorded_lines_give_the_latest_complete_aggregation() -> None:
    first = _fed(b"".join(LINES[:2])).latest(0)
    assert first is not None
    assert first.columns == FIRST
    latest = _fed(b"", RECORDED).latest(0)
    assert latest is not None
    assert latest.columns == SECOND
    assert latest.time_us == 1  # read by the second feed
    assert _fed(RECORDED).latest(1) is None


def test_lines_cut_anywhere_parse_the_same() -> None:
    whole = _fed(RECORDED)
    for cut in range(1, len(RECORDED), 7):
        parts = _fed(RECORDED[:cut], RECORDED[cut:])
        cut_latest, whole_latest = parts.latest(0), whole.latest(0)
        assert cut_latest is not None and whole_latest is not None
        assert cut_latest.columns == whole_latest.columns, cut
        assert parts.records == whole.records == len(LINES)


def test_an_aggregation_in_progress_is_not_returned() -> None:
    assembler = _fed(b"".join(LINES[:4]))
    latest = assembler.latest(0)
    assert latest is not None
    assert latest.columns == FIRST  # the 4-region one has 2 of its regions so far
    assembler.feed(b"".join(LINES[4:]), 7)
    completed = assembler.latest(0)
    assert completed is not None
    assert completed.columns == SECOND
    assert completed.time_us == 7


def test_an_aggregation_whose_head_was_overwritten_is_dropped() -> None:
    # The ring buffer overwrote the first two regions of the second aggregation, then the
    # first aggregation came again (the next one): the headless one is never complete.
    assembler = _fed(b"".join(LINES[3:]) + b"".join(LINES[:2]))
    latest = assembler.latest(0)
    assert latest is not None
    assert latest.columns == FIRST
    assert assembler.dropped == 1


def test_a_region_restarting_below_the_last_starts_a_new_aggregation() -> None:
    # Same nr_regions, but the third region goes back to the first address: the first
    # two regions cannot be one aggregation with it.
    restarted = LINES[2] + LINES[3] + LINES[2] + LINES[3] + LINES[4] + LINES[5]
    assembler = _fed(restarted)
    latest = assembler.latest(0)
    assert latest is not None
    assert latest.columns == SECOND
    assert assembler.dropped == 1


def test_lost_events_drop_the_aggregation_in_progress() -> None:
    lost = b"CPU:1 [LOST 12 EVENTS]\n"
    assembler = _fed(b"".join(LINES[:4]) + lost + b"".join(LINES[4:]))
    latest = assembler.latest(0)
    assert latest is not None
    assert latest.columns == FIRST  # the second one lost its head at the marker


def test_targets_are_assembled_apart_and_other_events_ignored() -> None:
    other_target = RECORDED.replace(b"target_id=0", b"target_id=1").replace(b"0 2\n", b"7 9\n")
    other_event = (
        b"       kdamond.0-26298   [001] ..... 15092.295550: damos_esz: ctx_idx=0 "
        b"scheme_idx=0 esz=4096\n"
    )
    mixed = b"".join(
        one + two for one, two in zip(LINES, other_target.splitlines(keepends=True), strict=True)
    )
    assembler = _fed(mixed + other_event)
    assert assembler.targets() == [0, 1]
    zero, one = assembler.latest(0), assembler.latest(1)
    assert zero is not None and one is not None
    assert zero.columns == SECOND
    assert one.columns.start == SECOND.start
    assert one.columns.nr_accesses == [7, 7, 7, 3]
    assert assembler.records == 2 * len(LINES)


def test_addresses_scale_by_addr_unit() -> None:
    scaled = tracing.scaled(FIRST, 4096)
    assert scaled.start == [s * 4096 for s in FIRST.start]
    assert scaled.end == [e * 4096 for e in FIRST.end]
    assert scaled.nr_accesses == FIRST.nr_accesses
    assert tracing.scaled(FIRST, 1) is FIRST


def test_buffer_holds_a_few_aggregations_of_the_maximum() -> None:
    small, large = tracing.buffer_kb(10), tracing.buffer_kb(1000)
    assert small == tracing.MIN_BUFFER_KB
    needed = 1000 * tracing.EVENT_BYTES * tracing.BUFFERED_AGGREGATIONS + 4096
    assert large * 1024 >= needed > (large - 1) * 1024
    two_targets = tracing.buffer_kb(1000, nr_targets=2) * 1024
    assert two_targets >= 2 * (needed - 4096) + 4096 > large * 1024


def test_instance_names_carry_the_agent_pid() -> None:
    name = tracing.instance_name(321, 4242)
    assert name == "damon-k8s-321-4242"
    assert tracing.instance_owner(name) == 321
    assert tracing.instance_owner("damon-k8s-77") == 77
    assert tracing.instance_owner("damon-k8s-x") is None
    assert tracing.instance_owner("other-321") is None


def _fake_tracefs(root: Path) -> Path:
    (root / "instances").mkdir(parents=True)
    (root / tracing.EVENT_DIR).mkdir(parents=True)
    (root / tracing.EVENT_DIR / "format").write_text("name: damon_aggregated\n")
    return root


def test_stale_instances_of_dead_agents_are_removed(tmp_path: Path) -> None:
    root = _fake_tracefs(tmp_path / "tracing")
    for name in ("damon-k8s-11-5", "damon-k8s-12", f"damon-k8s-{os.getpid()}-9", "foreign"):
        (root / "instances" / name).mkdir()
    tracefs = tracing.Tracefs.find(tmp_path / "mnt", candidates=(root,))
    assert tracefs.root == root
    assert not tracefs.mounted_here
    removed = tracefs.remove_stale_instances(alive=lambda pid: pid == 12)
    assert removed == ["damon-k8s-11-5"]
    # Compared as sets: whether our pid sorts before "12" depends on the pid.
    assert set(os.listdir(root / "instances")) == {
        "damon-k8s-12",
        f"damon-k8s-{os.getpid()}-9",
        "foreign",
    }


def test_an_instance_that_cannot_be_set_up_leaves_nothing(tmp_path: Path) -> None:
    # A directory laid out like tracefs but without the instance's control files.
    tracefs = tracing.Tracefs(_fake_tracefs(tmp_path / "tracing"))
    with pytest.raises(errors.TracefsError, match="buffer_size_kb"):
        tracing.KdamondTrace(tracefs, 4242, max_regions=100)
    assert tracefs.our_instances() == []


def test_missing_trace_event_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "tracing"
    (root / "instances").mkdir(parents=True)
    tracefs = tracing.Tracefs(root)
    with pytest.raises(errors.TracefsError, match="no damon:damon_aggregated trace event"):
        tracing.KdamondTrace(tracefs, 4242, max_regions=100)


def _engine(
    fake: fake_sysfs.FakeDamonSysfs, state: Path, source: kernel_damon.SnapshotSource, root: Path
) -> kernel_damon.KernelDamon:
    return kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(fake, state, boot_id="boot-1", sleep=lambda _: None),
        kernel_release="6.18.0",
        snapshot_source=source,
        tracefs_candidates=(root,),
        tracefs_mount_dir=state / "tracefs",
    )


def _context() -> kernel_damon.KdamondContext:
    return kernel_damon.KdamondContext(
        key="host",
        monitoring=attrs.MonitoringAttrs(),
        operations="paddr",
        ranges=((0x100000000, 0x140000000),),
    )


def test_auto_falls_back_to_sysfs_and_says_so(
    fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _fake_tracefs(tmp_path / "tracing")
    engine = _engine(fake, tmp_path / "state", "auto", root)
    with caplog.at_level(logging.WARNING):
        engine.apply([_context()])
    try:
        assert engine.active_snapshot_source == "sysfs"
        assert "snapshots from sysfs" in caplog.text
        snap = engine.snapshots()["host"]
        assert len(snap.targets) == 1
        assert os.listdir(root / "instances") == []
    finally:
        engine.stop()
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_tracefs_that_cannot_be_set_up_fails_apply_and_stops(
    fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    root = _fake_tracefs(tmp_path / "tracing")
    engine = _engine(fake, tmp_path / "state", "tracefs", root)
    with pytest.raises(errors.TracefsError, match="buffer_size_kb"):
        engine.apply([_context()])
    assert engine.kdamond_pids() == {}
    assert fake.read("kdamonds/nr_kdamonds") == "0"
    assert os.listdir(root / "instances") == []


def test_an_unknown_snapshot_source_is_refused(
    fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    with pytest.raises(errors.ConfigError, match="snapshot_source"):
        _engine(fake, tmp_path / "state", "proc", tmp_path)  # type: ignore[arg-type]


def _aggregations(counts: list[int], *, target_id: int = 0) -> list[bytes]:
    """Lines of consecutive aggregations of ``counts`` regions over one range, in the
    recorded lines' format (``nr_accesses`` = the aggregation's index)."""
    lines = []
    for index, count in enumerate(counts):
        stamp = f"15100.{index * 100_000:06d}"
        for region in range(count):
            start, end = region * 4096, (region + 1) * 4096
            lines.append(
                f"       kdamond.0-26298   [001] ..... {stamp}: damon_aggregated: "
                f"target_id={target_id} nr_regions={count} {start}-{end}: {index} 1\n".encode()
            )
    return lines


def test_only_the_tail_is_parsed_once_counts_are_known() -> None:
    many = _aggregations([5] * 20)
    assembler = _fed(b"".join(many[:5]))
    assembler.feed_latest(b"".join(many[5:-2]), 1)  # ends 3 regions into the last one
    latest = assembler.latest(0)
    assert latest is not None
    assert latest.columns.nr_accesses == [18] * 5
    assert assembler.records == 5 + 2 * 5 + 2  # 2 aggregations and 2 lines of the tail
    assembler.feed_latest(b"".join(many[-2:]), 2)  # the cut one continues
    completed = assembler.latest(0)
    assert completed is not None
    assert completed.columns.nr_accesses == [19] * 5
    whole = _fed(b"".join(many)).latest(0)
    assert whole is not None
    assert completed.columns == whole.columns


def test_a_tail_too_short_for_grown_counts_is_parsed_whole() -> None:
    grown = _aggregations([3, 3, 3, 40, 40])
    assembler = _fed(b"".join(grown[:3]))
    assembler.feed_latest(b"".join(grown[3:]), 1)
    latest = assembler.latest(0)
    assert latest is not None
    assert latest.columns.nr_accesses == [4] * 40
    assert latest.columns.start == [r * 4096 for r in range(40)]


def test_daemon_takes_a_snapshot_source() -> None:
    base = ["--node-name", "n1", "--backend", "sim", "--sim-workload", "w.yaml"]
    # The node agent defaults to tracefs where it can be set up (half the CPU), else sysfs.
    assert cli_daemon.parse_args(base).snapshot_source == "auto"
    assert cli_daemon.parse_args([*base, "--snapshot-source", "sysfs"]).snapshot_source == "sysfs"
    with pytest.raises(SystemExit):
        cli_daemon.parse_args([*base, "--snapshot-source", "proc"])


def test_lines_without_context_parse_too() -> None:
    # The host's format with the instance's options/context-info off, as the trace sets
    # it up (no comm, pid, CPU, flags or timestamp); recorded lines, cut to 2 regions.
    bare = (
        b"damon_aggregated: target_id=0 nr_regions=2 1048576-2531209216: 0 25\n"
        b"damon_aggregated: target_id=0 nr_regions=2 2531209216-3221225472: 4 25\n"
    )
    latest = _fed(bare).latest(0)
    assert latest is not None
    assert latest.columns == reading.RegionColumns(
        start=[1048576, 2531209216], end=[2531209216, 3221225472], nr_accesses=[0, 4], age=[25, 25]
    )
