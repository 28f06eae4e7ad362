"""Config -> ordered sysfs writes, compared with golden logs under tests/kernel/golden/.

Regenerate after an intended change with ``DAMON_UPDATE_GOLDEN=1 pytest tests/kernel``
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from damon_agent.ops.kernel import errors, model, writes

GOLDEN = Path(__file__).with_name("golden")

RAM = (model.Region(0x100000, 0xC0000000), model.Region(0x100000000, 0x640000000))


def _check_golden(name: str, config: model.Kdamond) -> list[writes.Write]:
    log = writes.kdamond_writes(config)
    text = writes.format_log(log)
    path = GOLDEN / f"{name}.log"
    if os.environ.get("DAMON_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"golden log {path} is missing (DAMON_UPDATE_GOLDEN=1 makes it)"
    assert text == path.read_text(), f"writes differ from {path}"
    return log


def stat_paddr() -> model.Kdamond:
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                targets=(model.Target(regions=RAM),),
                schemes=(model.Scheme(action="stat"),),
            ),
        )
    )


def tiering_everything() -> model.Kdamond:
    """Every feature of the 6.18 tree at once."""
    demote = model.Scheme(
        action="migrate_cold",
        target_nid=1,
        apply_interval_us=1_000_000,
        access_pattern=model.AccessPattern(
            sz=model.Range(4096, model.ULONG_MAX),
            nr_accesses=model.Range(0, 0),
            age=model.Range(50, model.ULONG_MAX),
        ),
        quotas=model.Quotas(
            ms=10,
            bytes=128 << 20,
            reset_interval_ms=1000,
            weights=model.Weights(0, 1000, 1000),
            goals=(
                model.QuotaGoal("node_mem_free_bp", 500, nid=0),
                model.QuotaGoal("user_input", 10_000, current_value=1200),
            ),
        ),
        watermarks=model.Watermarks("free_mem_rate", 5_000_000, 1000, 1000, 0),
        core_filters=(model.Filter("addr", True, False, addr_start=0, addr_end=1 << 30),),
        ops_filters=(
            model.Filter("young", matching=True, allow=False),
            model.Filter("memcg", matching=True, allow=True, memcg_path="/kubepods/pod-a"),
            model.Filter("hugepage_size", matching=True, allow=False, min=2 << 20, max=2 << 20),
        ),
        dests=(model.Dest(1, 700), model.Dest(2, 300)),
    )
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="paddr",
                addr_unit=1,
                monitoring_attrs=model.MonitoringAttrs(
                    intervals=model.Intervals(
                        sample_us=5_000,
                        aggr_us=100_000,
                        update_us=1_000_000,
                        intervals_goal=model.IntervalsGoal(400, 3, 5_000, 10_000_000),
                    ),
                    nr_regions=model.Range(100, 2000),
                ),
                targets=(model.Target(regions=RAM),),
                schemes=(demote, model.Scheme(action="stat")),
            ),
        )
    )


def vaddr_two_processes() -> model.Kdamond:
    return model.Kdamond(
        contexts=(
            model.Context(
                operations="vaddr",
                targets=(model.Target(pid_target=100), model.Target(pid_target=200)),
                schemes=(
                    model.Scheme(
                        action="pageout",
                        access_pattern=model.AccessPattern(
                            nr_accesses=model.Range(0, 0), age=model.Range(20, model.ULONG_MAX)
                        ),
                        filters=(model.Filter("target", True, True, damon_target_idx=1),),
                    ),
                ),
            ),
        )
    )


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("stat_paddr", stat_paddr()),
        ("tiering_everything", tiering_everything()),
        ("vaddr_two_processes", vaddr_two_processes()),
    ],
)
def test_writes_match_golden_log(name: str, config: model.Kdamond) -> None:
    _check_golden(name, config)


def test_nr_files_come_before_their_children() -> None:
    log = writes.kdamond_writes(tiering_everything())
    paths = [w.path for w in log]
    for index, path in enumerate(paths):
        if path.rsplit("/", 1)[-1].startswith("nr_"):
            parent = path.rsplit("/", 1)[0]
            children = [p for p in paths if p.startswith(parent + "/") and p != path]
            assert all(paths.index(c) > index for c in children), path


def test_access_pattern_is_always_written_in_full() -> None:
    # The kernel's fresh scheme has 0..0 ranges, matching nothing.
    log = writes.kdamond_writes(stat_paddr())
    pattern = {w.path: w.value for w in log if "/access_pattern/" in w.path}
    assert len(pattern) == 6
    assert pattern["contexts/0/schemes/0/access_pattern/sz/max"] == str(model.ULONG_MAX)


def test_unused_newer_features_are_not_written() -> None:
    paths = {w.path for w in writes.kdamond_writes(stat_paddr())}
    newer = ("addr_unit", "intervals_goal", "dests", "core_filters", "target_nid", "goals")
    assert not [p for p in paths if any(n in p for n in newer)]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (model.Kdamond(contexts=(model.Context(), model.Context())), "kdamond.contexts"),
        (
            model.Kdamond(contexts=(model.Context(operations="paddr"),)),
            None,
        ),
        (
            model.Kdamond(
                contexts=(
                    model.Context(
                        operations="paddr",
                        targets=(model.Target(regions=(model.Region(10, 5),)),),
                    ),
                )
            ),
            "kdamond.contexts[0].targets[0].regions[0]",
        ),
        (
            model.Kdamond(
                contexts=(
                    model.Context(
                        operations="paddr",
                        targets=(model.Target(regions=RAM),),
                        schemes=(
                            model.Scheme(core_filters=(model.Filter("memcg", memcg_path="/a"),)),
                        ),
                    ),
                )
            ),
            "kdamond.contexts[0].schemes[0].core_filters[0].type",
        ),
        (
            model.Kdamond(
                contexts=(
                    model.Context(
                        operations="paddr",
                        targets=(model.Target(regions=RAM),),
                        schemes=(model.Scheme(ops_filters=(model.Filter("memcg"),)),),
                    ),
                )
            ),
            "kdamond.contexts[0].schemes[0].ops_filters[0].memcg_path",
        ),
        (
            model.Kdamond(
                contexts=(
                    model.Context(
                        operations="paddr",
                        monitoring_attrs=model.MonitoringAttrs(
                            intervals=model.Intervals(sample_us=10_000, aggr_us=5_000)
                        ),
                        targets=(model.Target(regions=RAM),),
                    ),
                )
            ),
            "kdamond.contexts[0].monitoring_attrs.intervals.aggr_us",
        ),
    ],
)
def test_invalid_config_names_the_field(config: model.Kdamond, field: str | None) -> None:
    if field is None:
        # A paddr context without targets is legal to stage (it just monitors nothing).
        assert writes.kdamond_writes(config)[0].path == "contexts/nr_contexts"
        return
    with pytest.raises(errors.ConfigError) as caught:
        writes.kdamond_writes(config)
    assert caught.value.field == field
    assert field in str(caught.value)
