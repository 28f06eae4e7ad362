"""A scheme's status from its targeted nodes' DamonNode statuses; pure.

Per targeted node the scheme is in one of three states:

* ready    — the node's agent reports this scheme (same UID, generation at least the
             scheme's) with condition Ready=True;
* failing  — the agent reports Ready=False (its reason and message are kept), or the
             node's heartbeat is older than the timeout (``NodeUnresponsive``), or the
             agent's status cannot be read (``InvalidNodeStatus``);
* pending  — not reported yet (a new generation, an agent that never reported).

A node whose agent reports ``DamonAvailable=False`` (someone else holds its DAMON: a
DAMON module, which runs exclusively, or kdamonds another tool made) fails every scheme
that does not run there with reason ``DamonHeld`` and the node's message, which names
the holder and what frees it, rather than a generic ``ApplyFailed`` or ``Pending``: the
scheme cannot run there until an admin acts, whatever version the agent has seen.

Conditions: ``Accepted`` (the verdict), ``Ready`` (all targeted nodes ready, message
"n/m nodes ready"), ``Degraded`` (some node failing, message naming the nodes and their
reasons). Totals of tried/applied bytes, and the memory the scheme's pods saved (each
agent's ``savedBytes``: charged at first sight minus now), are summed over the ready and
failing nodes' reports of this generation. ``observedGeneration`` is the scheme's
generation everywhere.

The result is a ``SchemeStatus``; ``set_condition`` keeps transition times of unchanged
conditions, so the same inputs give the same status and the controller can skip writing.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from damon_agent.api import conditions, resources, units
from damon_operator import index, validation

MAX_DEGRADED_MESSAGE_NODES = 5


@dataclasses.dataclass(frozen=True)
class NodeOutcome:
    node: str
    state: str  # "ready" | "failing" | "pending"
    reason: str = ""
    message: str = ""
    tried_bytes: int = 0
    applied_bytes: int = 0
    saved_bytes: int = 0


def node_outcome(
    entry: index.SchemeEntry,
    node: str,
    damon_node: index.DamonNodeEntry | None,
    *,
    now: datetime.datetime,
    heartbeat_timeout_s: float,
) -> NodeOutcome:
    if damon_node is None:
        return NodeOutcome(node, "pending", "NoDamonNode", "no DamonNode object yet")
    if damon_node.status_error is not None:
        return NodeOutcome(node, "failing", "InvalidNodeStatus", damon_node.status_error)
    status = damon_node.status
    age = damon_node.heartbeat_age(now)
    if status is None or age is None:
        return NodeOutcome(node, "pending", "AgentNotReporting", "the agent has not reported")
    if age > heartbeat_timeout_s:
        # The time of the last heartbeat, not its age: an age would change the message, and
        # so the scheme's status, on every resync.
        since = status.heartbeat.isoformat().replace("+00:00", "Z") if status.heartbeat else "?"
        return NodeOutcome(node, "failing", "NodeUnresponsive", f"no heartbeat since {since}")
    damon = conditions.find(status.conditions, resources.CONDITION_DAMON_AVAILABLE)
    held = damon is not None and damon.status == "False"
    held_message = damon.message if damon is not None else ""
    report = status.scheme(entry.key)
    if report is None or report.uid != entry.uid or report.observed_generation < entry.generation:
        if held:
            return NodeOutcome(node, "failing", resources.REASON_DAMON_HELD, held_message)
        return NodeOutcome(node, "pending", "Pending", "the agent has not applied this version")
    ready = conditions.find(report.conditions, "Ready")
    tried, applied, saved = report.tried_bytes, report.applied_bytes, report.saved_bytes
    if ready is not None and ready.status == "True":
        return NodeOutcome(
            node, "ready", tried_bytes=tried, applied_bytes=applied, saved_bytes=saved
        )
    if held and (ready is None or ready.reason in _GENERIC_FAILURES):
        return NodeOutcome(
            node,
            "failing",
            resources.REASON_DAMON_HELD,
            held_message,
            tried_bytes=tried,
            applied_bytes=applied,
            saved_bytes=saved,
        )
    if ready is not None and ready.status == "False":
        return NodeOutcome(
            node,
            "failing",
            ready.reason,
            ready.message,
            tried_bytes=tried,
            applied_bytes=applied,
            saved_bytes=saved,
        )
    return NodeOutcome(node, "pending", "Pending", "the agent has not said whether it runs")


# Reasons that say only that a scheme did not run; on a node whose DAMON is held the
# node's own reason says why.
_GENERIC_FAILURES = frozenset({"ApplyFailed", "Pending"})


def aggregate(
    entry: index.SchemeEntry,
    outcomes: Sequence[NodeOutcome],
    previous: resources.SchemeStatus,
    *,
    tier_verdict: validation.Verdict,
    now: datetime.datetime,
) -> resources.SchemeStatus:
    """The scheme's new status."""
    generation = entry.generation
    verdict = entry.verdict if not entry.verdict.accepted else tier_verdict
    conds = conditions.set_condition(
        previous.conditions,
        type="Accepted",
        status="True" if verdict.accepted else "False",
        reason=verdict.reason,
        message=verdict.message,
        generation=generation,
        at=now,
    )
    ready = [o for o in outcomes if o.state == "ready"]
    failing = [o for o in outcomes if o.state == "failing"]
    targeted = len(outcomes)
    nodes_ready = f"{len(ready)}/{targeted}"
    if not verdict.accepted:
        ready_status, ready_reason, ready_message = "False", "NotAccepted", verdict.message
    elif targeted == 0:
        ready_status, ready_reason = "False", "NoTargetedNodes"
        ready_message = "no node matches the nodeSelector"
    elif len(ready) == targeted:
        ready_status, ready_reason = "True", "AllNodesReady"
        ready_message = f"{nodes_ready} nodes ready"
    else:
        ready_status, ready_reason = "False", "NodesNotReady"
        ready_message = f"{nodes_ready} nodes ready"
    conds = conditions.set_condition(
        conds,
        type="Ready",
        status=ready_status,  # type: ignore[arg-type]
        reason=ready_reason,
        message=ready_message,
        generation=generation,
        at=now,
    )
    if failing:
        named = "; ".join(
            f"{o.node}: {o.reason}" + (f" ({o.message})" if o.message else "")
            for o in failing[:MAX_DEGRADED_MESSAGE_NODES]
        )
        more = len(failing) - MAX_DEGRADED_MESSAGE_NODES
        if more > 0:
            named += f"; and {more} more"
        conds = conditions.set_condition(
            conds,
            type="Degraded",
            status="True",
            reason="NodesFailing",
            message=f"{len(failing)}/{targeted} nodes failing: {named}",
            generation=generation,
            at=now,
        )
    else:
        conds = conditions.set_condition(
            conds,
            type="Degraded",
            status="False",
            reason="NoFailures",
            message="no targeted node reports a failure",
            generation=generation,
            at=now,
        )
    tried = sum(o.tried_bytes for o in outcomes)
    applied = sum(o.applied_bytes for o in outcomes)
    saved = min(sum(o.saved_bytes for o in outcomes), units.UNBOUNDED)
    return resources.SchemeStatus(
        observed_generation=generation,
        conditions=conds,
        actions=validation.actions_summary(entry.spec) if entry.spec else "",
        nodes_ready=nodes_ready,
        nodes=resources.NodeCounts(targeted=targeted, ready=len(ready), degraded=len(failing)),
        failing_nodes=[
            resources.NodeFailure(node=o.node, reason=o.reason[:1024], message=o.message[:1024])
            for o in failing[: resources.MAX_FAILING_NODES]
        ],
        tried_bytes=min(tried, units.UNBOUNDED),
        applied_bytes=min(applied, units.UNBOUNDED),
        applied=units.format_bytes(min(applied, units.UNBOUNDED)),
        saved_bytes=saved,
        saved=units.format_bytes(saved),
    )


def previous_status(raw: Mapping[str, object] | None) -> resources.SchemeStatus:
    """The status as stored, or an empty one when absent or unreadable."""
    try:
        return resources.SchemeStatus.model_validate(dict(raw or {}))
    except ValueError:
        return resources.SchemeStatus()


def dump_status(status: resources.SchemeStatus) -> dict[str, Any]:
    return resources.to_api(status)


def differs_beyond_totals(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two dumped statuses differ in more than the byte counters."""
    counters = {"triedBytes", "appliedBytes", "applied", "savedBytes", "saved"}
    return {k: v for k, v in a.items() if k not in counters} != {
        k: v for k, v in b.items() if k not in counters
    }
