"""The goal-tuned quotas' warm-up (``ops.kernel.warm_up``): which schemes warm up, their
short resets and scaled limits, and how long the warm-up lasts."""

from __future__ import annotations

from dataclasses import replace

from damon_agent.ops.kernel import model, warm_up

MIB = 1 << 20
PSI_GOAL = (model.QuotaGoal("user_input", 1000),)


def _scheme(**quotas: object) -> model.Scheme:
    fields: dict[str, object] = {"reset_interval_ms": 1000, "goals": PSI_GOAL, **quotas}
    return model.Scheme(action="pageout", quotas=model.Quotas(**fields))  # type: ignore[arg-type]


def test_a_goal_tuned_quota_resets_ten_times_as_often_at_the_same_pace() -> None:
    warmed = warm_up.warm_up([_scheme(bytes=256 * MIB, ms=10)], aggr_us=100_000)
    quotas = warmed.schemes[0].quotas
    assert quotas.reset_interval_ms == 100
    assert quotas.bytes == 256 * MIB // 10 + 1  # rounded up: the pace is never lower
    assert quotas.ms == 1
    assert quotas.goals == PSI_GOAL
    assert warmed.warm_bytes == (quotas.bytes,)
    # At most twice the 25 doublings from one byte to 25.6 MiB and the window that
    # starts the tuner.
    assert warmed.duration_us == 2 * 26 * 100_000


def test_without_a_size_quota_it_grows_to_the_examples_pace() -> None:
    warmed = warm_up.warm_up([_scheme()], aggr_us=100_000)
    assert warmed.schemes[0].quotas.bytes == 0
    assert warmed.warm_bytes == (256 * MIB // 10 + 1,)
    assert warmed.duration_us == 2 * 26 * 100_000
    small = warm_up.warm_up([_scheme(bytes=4 * MIB)], aggr_us=100_000)
    assert small.warm_bytes == (4 * MIB // 10 + 1,)
    assert small.duration_us == 2 * 20 * 100_000


def test_a_reset_comes_no_more_often_than_the_scheme_is_applied() -> None:
    # 200 ms aggregations (the API's default): resets of 100 ms happen every 200 ms.
    assert warm_up.warm_up([_scheme()], aggr_us=200_000).duration_us == 2 * 26 * 200_000
    applied = replace(_scheme(), apply_interval_us=500_000)
    assert warm_up.warm_up([applied], aggr_us=100_000).duration_us == 2 * 26 * 500_000
    # A reset no longer than an aggregation already goes as fast as it can.
    short = _scheme(reset_interval_ms=200)
    assert warm_up.warm_up([short], aggr_us=200_000) == warm_up.WarmUp((short,), (None,), 0)


def test_only_goal_tuned_consist_quotas_warm_up() -> None:
    fixed = _scheme(goals=(), bytes=256 * MIB)
    temporal = _scheme(goal_tuner="temporal")
    consist = _scheme(goal_tuner="consist")
    warmed = warm_up.warm_up([fixed, temporal, consist], aggr_us=100_000)
    assert warmed.schemes[:2] == (fixed, temporal)
    assert warmed.schemes[2].quotas.reset_interval_ms == 100
    assert warm_up.warm_up([fixed, temporal], aggr_us=100_000).duration_us == 0


def test_it_is_done_when_every_warming_quota_reached_its_warm_size() -> None:
    warmed = warm_up.warm_up([_scheme(bytes=100), _scheme(goals=()), _scheme(bytes=1000)], 100_000)
    assert warmed.warm_bytes == (10, None, 100)
    assert warmed.done([10, 0, 100])
    assert not warmed.done([10, 0, 99])
    assert not warmed.done([None, 0, 100])  # not shown by the kernel
