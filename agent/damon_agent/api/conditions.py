"""Status conditions as the Kubernetes API conventions define them, and how to update them.

A condition is (type, status, reason, message, observedGeneration, lastTransitionTime).
``lastTransitionTime`` moves only when ``status`` flips, so setting the same condition
again (a new message, a newer generation) keeps the time of the last real transition;
that is what lets controllers write conditions idempotently and lets a reader tell how
long something has been broken. ``set_condition`` is pure: it returns a new list.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Annotated, Literal

import pydantic

from damon_agent.api import base

ConditionStatus = Literal["True", "False", "Unknown"]
MAX_CONDITIONS = 16
MAX_MESSAGE = 4096


class Condition(base.StatusModel):
    """One observation of the object's state (``metav1.Condition``)."""

    type: Annotated[
        str, pydantic.Field(min_length=1, max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9_.\-/]*$")
    ]
    status: ConditionStatus
    reason: Annotated[
        str,
        pydantic.Field(
            min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
        ),
    ]
    message: Annotated[str, pydantic.Field(max_length=MAX_MESSAGE)] = ""
    observed_generation: Annotated[int, pydantic.Field(ge=0, le=2**63 - 1)] = 0
    last_transition_time: datetime.datetime


def now() -> datetime.datetime:
    """The current time, truncated to seconds as Kubernetes stores it."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    at: datetime.datetime,
) -> list[Condition]:
    """``conditions`` with ``type`` set; the transition time moves only if status flips."""
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    previous = find(conditions, type)
    since = previous.last_transition_time if previous and previous.status == status else at
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )
    kept = [c for c in conditions if c.type != type]
    index = next((i for i, c in enumerate(conditions) if c.type == type), len(kept))
    kept.insert(index, updated)
    return kept


def find(conditions: Sequence[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: Sequence[Condition], type: str) -> bool:
    found = find(conditions, type)
    return found is not None and found.status == "True"
