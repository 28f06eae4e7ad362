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

Who may read: ``/v1/snapshot`` (pods' memory layouts) always needs a bearer token whose
user may ``get damonnodes/snapshot`` of this node; ``/metrics`` needs one whose user may
``get damonnodes/metrics`` when the app is made with ``metrics_auth`` (the daemon's
``--metrics-auth``; off by default, so a Prometheus without a token keeps scraping).
``guard`` decides (TokenReview, then SubjectAccessReview, with a short cache); a refused
request gets its status (401, 403, or 503 when the API server could not be asked) and
a JSON body ``{"code", "reason", "message"}``. ``/healthz`` and ``/readyz`` stay open:
the kubelet probes them without credentials, and they say nothing about pods.

The handlers only read through the ``AgentView`` protocol, so tests drive them with a
small fake and the daemon with its real state.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import prometheus_client
import prometheus_client.exposition
from aiohttp import web
from aiohttp.typedefs import Handler

from damon_agent.runtime import guard, snapshot_client, wire


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


def make_app(
    view: AgentView,
    registry: prometheus_client.CollectorRegistry,
    access_guard: guard.Guard,
    *,
    metrics_auth: bool = False,
) -> web.Application:
    """The agent's endpoints; ``/v1/snapshot`` (and with ``metrics_auth`` ``/metrics``)
    only for requests ``access_guard`` allows."""
    app = web.Application(middlewares=[_guarded])
    app[_VIEW_KEY] = view
    app[_REGISTRY_KEY] = registry
    app[_GUARD_KEY] = access_guard
    guarded = {"/v1/snapshot": guard.snapshot_access(view.node_name)}
    if metrics_auth:
        guarded["/metrics"] = guard.metrics_access(view.node_name)
    app[_GUARDED_KEY] = guarded
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/v1/snapshot", _snapshot)
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
    if scheme:
        entries = [e for e in entries if scheme in (e.scheme, e.scheme.rsplit("/", 1)[-1])]
    if pod:
        entries = [_narrowed(e, pod) for e in entries if pod in e.pods]
    return web.json_response(wire.encode(view.node_name, view.backend, entries))


def _narrowed(entry: wire.SnapshotEntry, pod: str) -> wire.SnapshotEntry:
    return wire.SnapshotEntry(
        scheme=entry.scheme,
        operations=entry.operations,
        pods=entry.pods,
        snapshot=snapshot_client.pod_view(entry, pod),
        target_pods={k: v for k, v in entry.target_pods.items() if v == pod},
    )
