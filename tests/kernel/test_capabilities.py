"""Feature probing against fake trees of a new and an older kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from damon_agent.ops.kernel import capabilities, errors, model
from damon_agent.ops.kernel import fake as fake_sysfs


def test_probe_of_a_full_tree_finds_every_feature_and_leaves_no_kdamond(
    fake: fake_sysfs.FakeDamonSysfs,
) -> None:
    report = capabilities.probe(fake, "6.18.4")
    assert report.method == "probed"
    assert report.operations == ("paddr",)
    assert set(report.actions) == set(model.ACTIONS)
    assert set(report.filter_types) == set(model.FILTER_TYPES)
    assert report.has("intervals_goal") and report.has("addr_unit")
    assert report.has("online_commit") and report.has("core_ops_filters")
    assert not report.has("goal_path")  # the 6.18 tree has no goals/N/path
    assert fake.read("kdamonds/nr_kdamonds") == "0"


def test_probe_of_an_older_tree_reports_what_is_missing_with_its_version(tmp_path: Path) -> None:
    old = fake_sysfs.FakeDamonSysfs(
        tmp_path / "admin", omit={"addr_unit", "intervals_goal", "core_filters", "ops_filters"}
    )
    report = capabilities.probe(old, "6.14.0")
    assert not report.has("addr_unit") and not report.has("intervals_goal")
    with pytest.raises(errors.FeatureMissingError) as caught:
        report.require("intervals_goal")
    assert caught.value.since == "6.15"
    assert "6.15" in str(caught.value)


def test_check_names_the_missing_operations_set(fake: fake_sysfs.FakeDamonSysfs) -> None:
    report = capabilities.probe(fake, "6.18.4")
    vaddr = model.Kdamond(contexts=(model.Context(operations="vaddr"),))
    with pytest.raises(errors.FeatureMissingError, match="vaddr operations set"):
        report.check(vaddr)


def test_actions_the_operations_set_cannot_carry_out_are_refused(
    fake: fake_sysfs.FakeDamonSysfs,
) -> None:
    report = capabilities.probe(fake, "6.18.4")
    with pytest.raises(errors.FeatureMissingError, match="willneed on paddr"):
        report.require_action("willneed", "paddr")
    report.require_action("pageout", "paddr")


def test_with_kdamonds_present_the_probe_reads_only(fake: fake_sysfs.FakeDamonSysfs) -> None:
    fake.write("kdamonds/nr_kdamonds", "1")
    fake.write("kdamonds/0/contexts/nr_contexts", "1")
    writes_before = len(fake.log)
    report = capabilities.probe(fake, "6.9.1")
    assert report.method == "kernel-version"
    assert fake.log[writes_before:] == []
    assert report.operations == ("paddr",)
    assert report.has("effective_quotas") and not report.has("target_nid")
    assert "migrate_cold" not in report.actions


def test_missing_sysfs_interface(tmp_path: Path) -> None:
    from damon_agent.ops.kernel import sysfs

    with pytest.raises(errors.FeatureMissingError, match="sysfs interface"):
        capabilities.probe(sysfs.HostSysfs(tmp_path), "5.15.0")


def test_version_table_covers_every_known_name() -> None:
    assert set(capabilities.ACTION_SINCE) == set(model.ACTIONS)
    assert set(capabilities.FILTER_TYPE_SINCE) == set(model.FILTER_TYPES)
    assert set(capabilities.GOAL_METRIC_SINCE) == set(model.QUOTA_GOAL_METRICS)
    assert set(capabilities.FEATURE_FILE) <= set(capabilities.FEATURE_SINCE)
    assert capabilities.parse_version("6.18.44-fc-v657") == (6, 18)
