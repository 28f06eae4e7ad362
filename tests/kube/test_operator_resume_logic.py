"""The operator resumes kopf when the apiserver ended its run (no cluster needed).

A restarting apiserver answers 404 for custom resources until it has loaded their
definitions; kopf then stops the whole operator. tests/kube/runtime/test_apiserver_outage.py
restarts a real apiserver under a real operator; these pin the loop's rules.
"""

from __future__ import annotations

import logging

import aiohttp
import kubernetes
import pytest
from kopf._cogs.clients import errors as kopf_api_errors

from damon_operator import kube, main


def _not_found() -> Exception:
    return kopf_api_errors.APINotFoundError("404 page not found", status=404, headers={})


def test_a_lost_watch_is_resumed_once_the_apiserver_serves_damon_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[Exception] = [_not_found(), aiohttp.ClientConnectionError("refused")]
    runs: list[int] = []

    def run_once() -> None:
        runs.append(len(runs))
        if failures:
            raise failures.pop(0)

    answers = iter([False, False, True, True])
    slept: list[float] = []
    with caplog.at_level(logging.INFO):
        main.run_resuming(run_once, lambda: next(answers), sleep=slept.append)
    assert runs == [0, 1, 2], "run again after each failure, and stop when a run returns"
    # A pause before each resume, and one more a second while damon.io is not served.
    assert slept == [1.0, 1.0, 1.0, 1.0], slept
    messages = [r.getMessage() for r in caplog.records]
    assert any("404 page not found" in m and "resuming once" in m for m in messages), messages
    assert sum("resuming" in m and "again" in m for m in messages) == 2, messages


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug, not the apiserver"),
        kopf_api_errors.APIForbiddenError("forbidden: a bug", status=403, headers={}),
    ],
    ids=["bug", "rbac"],
)
def test_anything_else_still_ends_the_operator(error: Exception) -> None:
    def run_once() -> None:
        raise error

    with pytest.raises(type(error), match="a bug"):
        main.run_resuming(run_once, lambda: True, sleep=lambda s: None)


@pytest.mark.parametrize(
    ("status", "unreachable"),
    [(0, True), (429, True), (500, True), (503, True), (404, False), (409, False), (422, False)],
)
def test_only_an_apiserver_that_cannot_answer_counts_as_unreachable(
    status: int, unreachable: bool
) -> None:
    assert kube.unreachable(kubernetes.client.ApiException(status=status)) is unreachable
    assert kube.unreachable(ConnectionRefusedError()) is True
    assert kube.unreachable(KeyError("status")) is False
