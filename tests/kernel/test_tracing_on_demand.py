"""Snapshots from tracefs only as often as someone asks for them, on the fakes.

On a fake DAMON sysfs and a fake tracefs (``ops.kernel.fake``), with a clock that moves
only when slept on and a stand-in kdamond that traces one aggregation per aggregation
interval (the fake tracefs records it only while the event is on): without a reader the
event stays off and no tried regions are updated, whatever the agent's other calls; the
first snapshot switches it on and is served from the next aggregation; the event goes
off again once nobody asked for ``trace_idle_s``, and what was traced before is never
served after it is on again.
"""

from __future__ import annotations

from pathlib import Path

from damon_agent.core import attrs
from damon_agent.ops.kernel import damon as kernel_damon
from damon_agent.ops.kernel import driver
from damon_agent.ops.kernel import fake as fake_sysfs

AGGR_US = 100_000
START, END = 0x100000000, 0x140000000


class _Kdamond:
    """A clock that advances only when slept on, tracing an aggregation every
    aggregation interval into the fake tracefs (``nr_accesses`` = the interval's index)."""

    def __init__(self, tracefs: fake_sysfs.FakeTracefs) -> None:
        self.tracefs = tracefs
        self.now = 0
        self.aggregations = 0

    def now_us(self) -> int:
        return self.now

    def sleep_us(self, duration_us: int) -> None:
        for _ in range((self.now + duration_us) // AGGR_US - self.now // AGGR_US):
            self.aggregations += 1
            middle = (START + END) // 2
            self.tracefs.emit(
                b"".join(
                    f"damon_aggregated: target_id=0 nr_regions=2 {s}-{e}: "
                    f"{self.aggregations} 1\n".encode()
                    for s, e in ((START, middle), (middle, END))
                )
            )
        self.now += duration_us


def _engine(
    fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> tuple[kernel_damon.KernelDamon, fake_sysfs.FakeTracefs, _Kdamond]:
    tracefs = fake_sysfs.FakeTracefs(tmp_path / "tracing")
    kdamond = _Kdamond(tracefs)
    engine = kernel_damon.KernelDamon(
        driver=driver.KdamondDriver(
            fake, tmp_path / "state", boot_id="boot-1", sleep=lambda _: None
        ),
        kernel_release="6.18.0",
        clock=kdamond,
        snapshot_source="auto",
        tracefs=tracefs,
        trace_idle_s=30.0,
    )
    context = kernel_damon.KdamondContext(
        key="host",
        monitoring=attrs.MonitoringAttrs(aggr_us=AGGR_US),
        operations="paddr",
        ranges=((START, END),),
    )
    engine.apply([context])
    return engine, tracefs, kdamond


def _tried_region_updates(fake: fake_sysfs.FakeDamonSysfs) -> int:
    return sum(1 for _, value in fake.log if value == "update_schemes_tried_regions")


def test_nobody_reading_costs_no_trace_events_and_no_tried_regions(
    fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    engine, tracefs, kdamond = _engine(fake, tmp_path)
    try:
        (instance,) = tracefs.our_instances()
        assert engine.active_snapshot_source == "tracefs"
        for _ in range(60):  # a minute of the daemon's calls, nobody reading snapshots
            kdamond.sleep_us(1_000_000)
            engine.stats()
            engine.tuning()
            engine.find_holders()
        assert not tracefs.event_enabled(instance)
        assert (tracefs.root / "instances" / instance / "trace_pipe").read_bytes() == b""
        assert _tried_region_updates(fake) == 0
    finally:
        engine.stop()
    assert tracefs.our_instances() == []


def test_a_reader_switches_the_trace_on_until_nobody_asks(
    fake: fake_sysfs.FakeDamonSysfs, tmp_path: Path
) -> None:
    engine, tracefs, kdamond = _engine(fake, tmp_path)
    try:
        (instance,) = tracefs.our_instances()
        kdamond.sleep_us(5_000_000)
        first = engine.snapshots()["host"].targets[0]
        # Served from the first aggregation after the event went on, not from sysfs.
        assert tracefs.event_enabled(instance)
        assert first.start.tolist() == [START, (START + END) // 2]
        assert first.nr_accesses.tolist() == [kdamond.aggregations] * 2
        assert _tried_region_updates(fake) == 0
        for _ in range(3):  # a reader every 10 s keeps it on
            kdamond.sleep_us(10_000_000)
            engine.stats()
            assert tracefs.event_enabled(instance)
            latest = engine.snapshots()["host"].targets[0]
            assert latest.nr_accesses.tolist() == [kdamond.aggregations] * 2
        kdamond.sleep_us(31_000_000)
        engine.find_holders()
        assert not tracefs.event_enabled(instance)
        traced_before = kdamond.aggregations
        kdamond.sleep_us(60_000_000)  # nothing traced meanwhile
        again = engine.snapshots()["host"].targets[0]
        assert again.nr_accesses.tolist() == [traced_before + 601] * 2
        assert _tried_region_updates(fake) == 0
    finally:
        engine.stop()
