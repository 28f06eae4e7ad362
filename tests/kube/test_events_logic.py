"""The operator's Events without a cluster: which condition changes deserve one
(``damon_operator.events``), and the controller posting them only when a written status
changes a condition, never on a resync, rate-limited per scheme and reason."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from damon_agent.api import conditions, events
from damon_operator import controller, index, kube
from damon_operator import events as scheme_events

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SCHEME = events.ObjectRef("damon.io/v1alpha1", "DamonScheme", "cold", "shop", "uid-cold")


def conds(generation: int = 1, **states: tuple[str, str]) -> list[conditions.Condition]:
    """``Accepted=("True", "message")`` and so on."""
    return [
        conditions.Condition(
            type=type_,
            status=status,  # type: ignore[arg-type]
            reason="R",
            message=message,
            observed_generation=generation,
            last_transition_time=NOW,
        )
        for type_, (status, message) in states.items()
    ]


def said(before: list[conditions.Condition], after: list[conditions.Condition]) -> list[Any]:
    return [
        (o.type, o.reason, o.message) for o in scheme_events.condition_events(SCHEME, before, after)
    ]


UP = {"Accepted": ("True", "ok"), "Ready": ("True", "2/2 nodes ready")}
HEALTHY = {**UP, "Degraded": ("False", "no targeted node reports a failure")}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            {},
            {"Accepted": ("True", "ok"), "Ready": ("False", "0/2 nodes ready")},
            [("Normal", "Accepted", "ok")],
            id="a new scheme: accepted, not ready yet (no NotReady)",
        ),
        pytest.param(
            {},
            {"Accepted": ("False", "schemes[0].accessPattern.age: min 30s > max 10s")},
            [("Warning", "Rejected", "schemes[0].accessPattern.age: min 30s > max 10s")],
            id="rejected with the field path",
        ),
        pytest.param(
            {"Accepted": ("True", "ok"), "Ready": ("False", "1/2 nodes ready")},
            UP,
            [("Normal", "Ready", "2/2 nodes ready")],
            id="ready",
        ),
        pytest.param(
            HEALTHY,
            {
                "Accepted": ("True", "ok"),
                "Ready": ("False", "1/2 nodes ready"),
                "Degraded": ("True", "1/2 nodes failing: n2: ApplyFailed (no)"),
            },
            [
                ("Warning", "NotReady", "1/2 nodes ready"),
                ("Warning", "Degraded", "1/2 nodes failing: n2: ApplyFailed (no)"),
            ],
            id="a node fails",
        ),
        pytest.param(
            {**UP, "Degraded": ("True", "1/2 nodes failing")},
            HEALTHY,
            [("Normal", "Recovered", "no targeted node reports a failure")],
            id="recovered",
        ),
        pytest.param(
            HEALTHY,
            {**HEALTHY, "Ready": ("True", "3/3 nodes ready")},
            [],
            id="a message alone changes: no event",
        ),
        pytest.param(
            HEALTHY,
            {
                "Accepted": ("False", "bad"),
                "Ready": ("False", "bad"),
                "Degraded": HEALTHY["Degraded"],
            },
            [("Warning", "Rejected", "bad")],
            id="rejected while running: Rejected says why, no NotReady",
        ),
        pytest.param(
            {"Accepted": ("True", "ok"), "Degraded": ("False", "none")},
            {"Accepted": ("True", "ok"), "Degraded": ("False", "none")},
            [],
            id="nothing changed",
        ),
    ],
)
def test_condition_changes_and_their_events(
    before: dict[str, Any], after: dict[str, Any], expected: list[Any]
) -> None:
    assert said(conds(**before), conds(**after)) == expected


def test_a_new_generation_refused_for_another_reason_is_said_again() -> None:
    first = conds(1, Accepted=("False", "age: min > max"))
    assert said(first, conds(1, Accepted=("False", "age: min > max"))) == []
    assert said(first, conds(2, Accepted=("False", "age: min > max"))) == []  # same reason
    assert said(first, conds(2, Accepted=("False", "willneed: not on paddr"))) == [
        ("Warning", "Rejected", "willneed: not on paddr")
    ]


# -- the controller -------------------------------------------------------------------------


def scheme_body(generation: int = 1, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"name": "cold", "namespace": "shop", "uid": "uid-cold", "generation": generation}
    default = {
        "podSelector": {"matchLabels": {"app": "cart"}},
        "schemes": [{"name": "s", "action": "pageout"}],
    }
    return {"metadata": meta, "spec": spec if spec is not None else default}


def node_report(ready: bool, generation: int = 1) -> dict[str, Any]:
    report = {
        "kind": "DamonScheme",
        "namespace": "shop",
        "name": "cold",
        "uid": "uid-cold",
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "Applied" if ready else "ApplyFailed",
                "message": "running" if ready else "the kernel said no",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    return {"metadata": {"name": "n1"}, "spec": {}, "status": {
        "heartbeat": NOW.isoformat(), "schemes": [report]
    }}  # fmt: skip


async def test_the_controller_posts_on_condition_changes_only_rate_limited() -> None:
    writer = kube.RecordingWriter()
    now_s = [0.0]
    ctl = controller.Controller(
        index.Index(),
        writer,
        controller.Config(coalesce_s=0.01, settle_s=0, event_interval_s=60),
        clock=lambda: NOW,
        monotonic=lambda: now_s[0],
    )
    key = "DamonScheme/shop/cold"
    history: list[events.Posting] = []
    ctl.note(ctl.index.put_node({"metadata": {"name": "n1"}}))
    ctl.note(ctl.index.put_scheme("DamonScheme", scheme_body()))

    async def sync() -> list[tuple[str, str, int]]:
        await ctl.sync_scheme_status(key, writer.statuses.get(key))
        await ctl.events.flush()
        posted = [(p.occurrence.reason, p.occurrence.message, p.count) for p in writer.postings]
        history.extend(writer.postings)
        writer.postings.clear()
        return [(reason, message[:20], count) for reason, message, count in posted]

    assert await sync() == [("Accepted", "the spec is valid", 1)]
    assert await sync() == []  # a resync: nothing changed, nothing written or posted
    ctl.index.put_damon_node(node_report(ready=True))
    assert await sync() == [("Ready", "1/1 nodes ready", 1)]
    ctl.index.put_damon_node(node_report(ready=False))
    assert await sync() == [
        ("NotReady", "0/1 nodes ready", 1),
        ("Degraded", "1/1 nodes failing: n", 1),
    ]
    # Flapping within the interval: the first Recovered goes out, the rest is held and
    # counted into one posting per series.
    for flap in range(3):
        now_s[0] += 5
        ctl.index.put_damon_node(node_report(ready=True))
        assert await sync() == ([("Recovered", "no targeted node rep", 1)] if flap == 0 else [])
        ctl.index.put_damon_node(node_report(ready=False))
        assert await sync() == []
    now_s[0] = 61  # 60 s after the first Ready, NotReady and Degraded
    assert sorted(await sync()) == [
        ("Degraded", "1/1 nodes failing: n", 4),
        ("NotReady", "0/1 nodes ready", 4),
        ("Ready", "1/1 nodes ready", 4),
    ]
    now_s[0] = 66  # and after the first Recovered
    assert await sync() == [("Recovered", "no targeted node rep", 3)]
    names = {(p.occurrence.reason, p.name) for p in history}
    assert len(names) == len({reason for reason, _ in names}) == 5  # one Event per series
    assert [p.create for p in history if p.occurrence.reason == "Degraded"] == [True, False]
    contradictory = {
        "podSelector": {"matchLabels": {"app": "cart"}},
        "schemes": [
            {
                "name": "s",
                "action": "pageout",
                "accessPattern": {"age": {"min": "30s", "max": "10s"}},
            }
        ],
    }
    ctl.note(ctl.index.put_scheme("DamonScheme", scheme_body(2, spec=contradictory)))
    (rejected,) = await sync()
    assert rejected[0] == "Rejected" and rejected[1].startswith("schemes[0].accessPat")
