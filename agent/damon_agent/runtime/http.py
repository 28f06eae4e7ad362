"""The agent's HTTP endpoints (aiohttp).

- ``/metrics``: Prometheus text from a ``prometheus_client`` registry whose collectors read
  fresh values on every scrape (see ``metrics``). Generating it may read sysfs and /proc,
  so it runs in a worker thread, never blocking the control loop.
- ``/healthz``: 200 while the control loop is alive (it ticked recently), 503 otherwise.
- ``/readyz``: 200 once the agent has its DamonNode, a backend, and has applied a plan
  at least once; 503 with the reason before that.
- ``/v1/snapshot[?pod=NS/NAME][&scheme=KEY]``: the latest snapshot of each scheme as JSON
  (shape: ``wire``); with ``pod``, only schemes selecting that pod, with vaddr targets
  narrowed to the pod's own processes.
- ``/v1/snapshots[?scheme=KEY][&pod=NS/NAME][&since=TIME_US][&limit=N]``: the recent
  snapshots the agent holds (``history``, a bounded ring) newer than ``since`` (the
  backend's clock, as the snapshots' ``time_us``), oldest first, at most ``limit`` (default
  ``HISTORY_PAGE_LIMIT``) snapshot times; the same document as ``/v1/snapshot`` with one
  entry per scheme and time, plus ``"history": {"more", "oldest_us", "newest_us",
  "window_s"}`` (``more``: ask again from the last time returned). What ``damonctl
  record --agent`` polls. A query parameter it cannot take answers 400 with
  ``{"code", "reason", "message", "parameter"}``.

Both snapshot endpoints read the backend's latest snapshots and add them to the ring, so
a poller's reads are what it later finds there.

Who may read: ``/v1/snapshot`` and ``/v1/snapshots`` (pods' memory layouts) always need a
bearer token whose user may ``get damonnodes/snapshot`` of this node; ``/metrics`` needs
one whose user may ``get damonnodes/metrics`` when the app is made with ``metrics_auth``
(the daemon's ``--metrics-auth``; off by default, so a Prometheus without a token keeps
scraping).
``guard`` decides (TokenReview, then SubjectAccessReview, with a short cache); a refused
request gets its status (401, 403, or 503 when the API server could not be asked) and
a JSON body ``{"code", "reason", "message"}``. ``/healthz`` and ``/readyz`` stay open:
the kubelet probes them without credentials, and they say nothing about pods.

The handlers only read through the ``AgentView`` protocol, so tests drive them with a
small fake and the daemon with its real state.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Protocol

import prometheus_client
import prometheus_client.exposition
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiMapping

from damon_agent.api import names
from damon_agent.runtime import guard, history, snapshot_client, wire


class AgentView(Protocol):
    """What the endpoints read from the running agent."""

    @property
    def node_name(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def liveness(self) -> tuple[bool, str]: ...

    def readiness(self) -> tuple[bool, str]: ...

    def snapshot_entries(self) -> list[wire.SnapshotEntry]: ...


_VIEW_KEY = web.AppKey("agent_view", AgentView)
_REGISTRY_KEY = web.AppKey("registry", prometheus_client.CollectorRegistry)
_GUARD_KEY = web.AppKey("guard", guard.Guard)
# Route path -> what a request to it needs; routes not listed are open.
_GUARDED_KEY = web.AppKey("guarded", dict[str, guard.Access])
_HISTORY_KEY = web.AppKey("history", history.SnapshotHistory)

# Snapshot times in one /v1/snapshots answer unless ``limit`` asks otherwise, and the most
# it may ask: a page of 1000-region snapshots stays a few MiB of JSON.
HISTORY_PAGE_LIMIT = 100
HISTORY_PAGE_LIMIT_MAX = 1000
_HISTORY_PARAMETERS = ("scheme", "pod", "since", "limit")


def make_app(
    view: AgentView,
    registry: prometheus_client.CollectorRegistry,
    access_guard: guard.Guard,
    *,
    metrics_auth: bool = False,
    snapshot_history: history.SnapshotHistory | None = None,
) -> web.Application:
    """The agent's endpoints; ``/v1/snapshot`` and ``/v1/snapshots`` (and with
    ``metrics_auth`` ``/metrics``) only for requests ``access_guard`` allows.

    ``snapshot_history``: the ring ``/v1/snapshots`` serves (the daemon's, which it also
    feeds); none: a ring of the default size fed by the requests alone."""
    app = web.Application(middlewares=[_guarded])
    app[_VIEW_KEY] = view
    app[_REGISTRY_KEY] = registry
    app[_GUARD_KEY] = access_guard
    app[_HISTORY_KEY] = (
        snapshot_history if snapshot_history is not None else history.SnapshotHistory()
    )
    # The ring holds the same pods' memory layouts as /v1/snapshot: the same access.
    guarded = {
        "/v1/snapshot": guard.snapshot_access(view.node_name),
        "/v1/snapshots": guard.snapshot_access(view.node_name),
    }
    if metrics_auth:
        guarded["/metrics"] = guard.metrics_access(view.node_name)
    app[_GUARDED_KEY] = guarded
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/v1/snapshot", _snapshot)
    app.router.add_get("/v1/snapshots", _snapshots)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app``; the caller ends it with ``await runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); ``ValueError`` says why."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: expected HOST:PORT with a port from 0 to 65535")
    return host.strip("[]") or "0.0.0.0", int(port_text)


@web.middleware
async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    access = request.app[_GUARDED_KEY].get(route.canonical) if route is not None else None
    if access is None:
        return await handler(request)
    decision = await request.app[_GUARD_KEY].check(request.headers.get("Authorization"), access)
    if decision.allowed:
        return await handler(request)
    headers = {}
    if decision.code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="damon-agent"'
    elif decision.code == 503:
        headers["Retry-After"] = "5"
    return web.json_response(decision.body(), status=decision.code, headers=headers)


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[_REGISTRY_KEY]
    body = await asyncio.to_thread(prometheus_client.generate_latest, registry)
    return web.Response(
        body=body, headers={"Content-Type": prometheus_client.exposition.CONTENT_TYPE_LATEST}
    )


async def _healthz(request: web.Request) -> web.Response:
    alive, reason = request.app[_VIEW_KEY].liveness()
    return web.Response(status=200 if alive else 503, text=reason + "\n")


async def _readyz(request: web.Request) -> web.Response:
    ready, reason = request.app[_VIEW_KEY].readiness()
    return web.Response(status=200 if ready else 503, text=reason + "\n")


async def _snapshot(request: web.Request) -> web.Response:
    view = request.app[_VIEW_KEY]
    pod = request.query.get("pod")
    scheme = request.query.get("scheme")
    # Reading snapshots may go to sysfs (kernel tried regions): off the event loop.
    entries = await asyncio.to_thread(view.snapshot_entries)
    request.app[_HISTORY_KEY].add(entries)
    if scheme:
        entries = [e for e in entries if scheme in (e.scheme, e.scheme.rsplit("/", 1)[-1])]
    if pod:
        entries = [_narrowed(e, pod) for e in entries if pod in e.pods]
    return web.json_response(wire.encode(view.node_name, view.backend, entries))


@dataclass(frozen=True)
class _HistoryQuery:
    scheme: str | None
    pod: str | None
    since_us: int | None
    limit: int


class _BadParameterError(Exception):
    """A ``/v1/snapshots`` query parameter the endpoint cannot take (answered 400)."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(message)


async def _snapshots(request: web.Request) -> web.Response:
    try:
        query = _history_query(request.query)
    except _BadParameterError as err:
        body = {
            "code": 400,
            "reason": "BadRequest",
            "message": str(err),
            "parameter": err.parameter,
        }
        return web.json_response(body, status=400)
    view, ring = request.app[_VIEW_KEY], request.app[_HISTORY_KEY]
    # A fresh read first (off the event loop, as for /v1/snapshot): a poller gets the
    # newest snapshot whatever else fed the ring.
    ring.add(await asyncio.to_thread(view.snapshot_entries))

    def wanted(entry: wire.SnapshotEntry) -> bool:
        if query.scheme and query.scheme not in (entry.scheme, entry.scheme.rsplit("/", 1)[-1]):
            return False
        return query.pod is None or query.pod in entry.pods

    page = ring.page(since_us=query.since_us, limit=query.limit, keep=wanted)

    def encoded() -> str:
        entries = page.entries
        if query.pod is not None:
            pod = query.pod
            entries = [_narrowed(e, pod) for e in entries]
        document = wire.encode(view.node_name, view.backend, entries)
        document["history"] = {
            "more": page.more,
            "oldest_us": page.oldest_us,
            "newest_us": page.newest_us,
            "window_s": ring.window_us / 1e6,
        }
        return json.dumps(document, separators=(",", ":"))

    # A page of many snapshots is megabytes of JSON: built off the event loop (the ring's
    # snapshots are its own copies, which nothing changes).
    text = await asyncio.to_thread(encoded)
    return web.Response(text=text, content_type="application/json")


def _history_query(query: MultiMapping[str]) -> _HistoryQuery:
    """``/v1/snapshots``'s parameters; ``_BadParameterError`` names the first it cannot take."""
    for name in query:
        if name not in _HISTORY_PARAMETERS:
            expected = ", ".join(_HISTORY_PARAMETERS)
            raise _BadParameterError(
                name, f"unknown query parameter {name!r} (expected: {expected})"
            )
        given = len(query.getall(name))
        if given > 1:
            raise _BadParameterError(name, f"query parameter {name!r} given {given} times")
    pod = query.get("pod") or None
    if pod is not None:
        try:
            names.NamespacedName.parse(pod)
        except ValueError as err:
            raise _BadParameterError("pod", f"query parameter 'pod': {err}") from None
    since_us = None
    if query.get("since"):
        since_us = _query_int(query, "since", 0, None, "microseconds on the agent's clock")
    limit = HISTORY_PAGE_LIMIT
    if query.get("limit"):
        limit = _query_int(query, "limit", 1, HISTORY_PAGE_LIMIT_MAX, "snapshot times")
    return _HistoryQuery(
        scheme=query.get("scheme") or None, pod=pod, since_us=since_us, limit=limit
    )


def _query_int(
    query: MultiMapping[str], name: str, low: int, high: int | None, meaning: str
) -> int:
    text = query[name]
    bounds = f"from {low} to {high}" if high is not None else f">= {low}"
    # isascii: str.isdigit also takes digits int() refuses (superscripts).
    whole = text.isascii() and text.isdigit()
    if not whole or not (low <= int(text) and (high is None or int(text) <= high)):
        raise _BadParameterError(
            name,
            f"query parameter {name!r}: expected an integer {bounds} ({meaning}), got {text!r}",
        )
    return int(text)


def _narrowed(entry: wire.SnapshotEntry, pod: str) -> wire.SnapshotEntry:
    return wire.SnapshotEntry(
        scheme=entry.scheme,
        operations=entry.operations,
        pods=entry.pods,
        snapshot=snapshot_client.pod_view(entry, pod),
        target_pods={k: v for k, v in entry.target_pods.items() if v == pod},
    )
