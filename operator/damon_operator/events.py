"""Which Events a scheme's condition changes deserve; pure.

The controller compares the conditions it last wrote (or found stored) with the ones it
is about to write, and posts what ``condition_events`` returns; conditions are only
written when they change, so a resync that changes nothing posts nothing.

=========== ================================== ======= ===========================
condition   change                             type    reason
=========== ================================== ======= ===========================
Accepted    to True (or first seen True)       Normal  Accepted
Accepted    to False (or first seen False, or  Warning Rejected
            a new generation refused anew for
            another reason)
Ready       to True                            Normal  Ready
Ready       True to False (while accepted)     Warning NotReady
Degraded    to True                            Warning Degraded
Degraded    True to False                      Normal  Recovered
=========== ================================== ======= ===========================

The message is the new condition's: the field path a rejection names, "n/m nodes
ready", the failing nodes and their reasons. A new scheme that is not ready yet, or not
degraded, says nothing beyond Accepted: that is its normal start.
"""

from __future__ import annotations

from collections.abc import Sequence

from damon_agent.api import conditions, events


def condition_events(
    about: events.ObjectRef,
    before: Sequence[conditions.Condition],
    after: Sequence[conditions.Condition],
) -> list[events.Occurrence]:
    found: list[events.Occurrence] = []

    def say(type_: events.EventType, reason: str, condition: conditions.Condition) -> None:
        found.append(events.Occurrence(about, type_, reason, condition.message))

    accepted = conditions.find(after, "Accepted")
    was_accepted = conditions.find(before, "Accepted")
    if accepted is not None and _changed(was_accepted, accepted):
        say(
            "Normal" if accepted.status == "True" else "Warning",
            _accepted_reason(accepted),
            accepted,
        )
    elif (
        accepted is not None and was_accepted is not None and _refused_anew(was_accepted, accepted)
    ):
        say("Warning", "Rejected", accepted)

    ready, was_ready = conditions.find(after, "Ready"), conditions.find(before, "Ready")
    if ready is not None and ready.status == "True" and _changed(was_ready, ready):
        say("Normal", "Ready", ready)
    elif (
        ready is not None
        and ready.status == "False"
        and was_ready is not None
        and was_ready.status == "True"
        and (accepted is None or accepted.status == "True")  # else "Rejected" said why
    ):
        say("Warning", "NotReady", ready)

    degraded, was_degraded = conditions.find(after, "Degraded"), conditions.find(before, "Degraded")
    if degraded is not None and degraded.status == "True" and _changed(was_degraded, degraded):
        say("Warning", "Degraded", degraded)
    elif (
        degraded is not None
        and degraded.status == "False"
        and was_degraded is not None
        and was_degraded.status == "True"
    ):
        say("Normal", "Recovered", degraded)
    return found


def _changed(before: conditions.Condition | None, after: conditions.Condition) -> bool:
    return before is None or before.status != after.status


def _accepted_reason(accepted: conditions.Condition) -> str:
    return "Accepted" if accepted.status == "True" else "Rejected"


def _refused_anew(before: conditions.Condition, after: conditions.Condition) -> bool:
    """A changed spec refused again, for another reason: the user needs the new one."""
    return (
        before.status == after.status == "False"
        and after.observed_generation > before.observed_generation
        and after.message != before.message
    )
