"""kopf handlers: thin adapters from watch events to the index and the controller.

Handlers hold no logic of their own, and all are ``async``: kopf runs synchronous handlers
in threads, while the index and the controller's wake-ups belong to the event loop.

Event handlers (``on.event``) feed the ``Index`` for Nodes, Namespaces, DamonNodes and
both scheme kinds and pass what became stale to the ``Controller``; one daemon per scheme
keeps its status aggregated; the delete handler is the finalizer: it lets a scheme go only
when no live node still lists it.

With ``--webhook-listen``, ``start`` also configures kopf's admission server and the
agents' node confinement (``admission``; its handlers are registered by ``main``).

With ``--instance``, handlers are filtered to objects carrying the instance label
(DamonNodes created for such nodes carry it too; Namespaces are not filtered), and the
finalizer's name carries the instance. Nodes and Namespaces are only watched (``on.event``
keeps no state on them, so the operator never writes to objects it does not own). The
controller and the settings come from ``memo`` (set by ``main``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from damon_agent.api import resources
from damon_operator import admission, controller, index, kube

GROUP = resources.GROUP
VERSION = resources.VERSION
DELETE_RETRY_S = 1.0
TEARDOWN_WAIT_S = 15.0
TEARDOWN_POLL_S = 0.25


def mine(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> bool:
    """With ``--instance NAME``, only objects labelled ``damon.io/instance=NAME`` exist for
    this operator (several operators, e.g. test sessions, can share one cluster)."""
    instance: str | None = memo["options"].instance
    return instance is None or labels.get(kube.INSTANCE_LABEL) == instance


def _controller(memo: kopf.Memo) -> controller.Controller:
    found: controller.Controller = memo["controller"]
    return found


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options = memo["options"]
    settings.persistence.finalizer = kube.finalizer(options.instance)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.lifetime = options.peering_lifetime_s
    settings.peering.stealth = True
    settings.posting.level = options.event_level
    settings.watching.server_timeout = 300
    kube.load_config()
    labels = {kube.INSTANCE_LABEL: options.instance} if options.instance else {}
    ctl = controller.Controller(
        index.Index(), kube.ApiWriter(damon_node_labels=labels), options.controller
    )
    memo["controller"] = ctl
    memo["node_specs_task"] = asyncio.create_task(ctl.run_node_specs(), name="node-specs")
    memo["events_task"] = asyncio.create_task(ctl.run_events(), name="events")
    webhook: admission.Config | None = options.webhook
    if webhook is not None:
        # Every replica serves the webhooks, peering or not: the Service may pick any.
        settings.admission.server = admission.server(webhook)
        if webhook.agent is not None:
            memo["confinement"] = admission.NodeConfinement(webhook.agent, kube.ApiPods())


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for name in ("node_specs_task", "events_task"):
        task: asyncio.Task[None] | None = memo.get(name)
        if task is not None:
            task.cancel()


# -- watched objects ---------------------------------------------------------------------


@kopf.on.event("", "v1", "nodes", when=mine)
async def node_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ctl = _controller(memo)
    if type == "DELETED":
        ctl.note(ctl.index.remove_node(body.metadata.name))
    else:
        ctl.note(ctl.index.put_node(body))


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ctl = _controller(memo)
    if type == "DELETED":
        ctl.note(ctl.index.remove_namespace(body.metadata.name))
    else:
        ctl.note(ctl.index.put_namespace(body))


@kopf.on.event(GROUP, VERSION, "damonnodes", when=mine)
async def damon_node_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ctl = _controller(memo)
    if type == "DELETED":
        ctl.note(ctl.index.remove_damon_node(body.metadata.name))
    else:
        ctl.note(ctl.index.put_damon_node(body))


def _scheme_event(kind: str, type_: str, body: kopf.Body, memo: kopf.Memo) -> None:
    ctl = _controller(memo)
    if type_ == "DELETED":
        key = resources.scheme_key(kind, body.metadata.namespace, body.metadata.name)
        ctl.forget(key)
        ctl.note(ctl.index.remove_scheme(key))
    else:
        ctl.note(ctl.index.put_scheme(kind, body))


@kopf.on.event(GROUP, VERSION, "damonschemes", when=mine)
async def damon_scheme_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _scheme_event("DamonScheme", type, body, memo)


@kopf.on.event(GROUP, VERSION, "clusterdamonschemes", when=mine)
async def cluster_damon_scheme_event(
    type: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    _scheme_event("ClusterDamonScheme", type, body, memo)


# -- status aggregation --------------------------------------------------------------------


async def _aggregate(kind: str, body: kopf.Body, memo: kopf.Memo, stopped: Any) -> None:
    key = resources.scheme_key(kind, body.metadata.namespace, body.metadata.name)
    await _controller(memo).scheme_daemon(key, lambda: body.get("status"), stopped)


@kopf.daemon(
    GROUP, VERSION, "damonschemes", cancellation_backoff=2.0, cancellation_timeout=5.0, when=mine
)
async def damon_scheme_status(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    await _aggregate("DamonScheme", body, memo, stopped)


@kopf.daemon(
    GROUP,
    VERSION,
    "clusterdamonschemes",
    cancellation_backoff=2.0,
    cancellation_timeout=5.0,
    when=mine,
)
async def cluster_damon_scheme_status(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    await _aggregate("ClusterDamonScheme", body, memo, stopped)


# -- deletion: tear down on every live node first ------------------------------------------


async def _teardown(kind: str, body: kopf.Body, memo: kopf.Memo, logger: Any) -> None:
    ctl = _controller(memo)
    key = resources.scheme_key(kind, body.metadata.namespace, body.metadata.name)
    ctl.note(ctl.index.put_scheme(kind, body))  # marks it deleting: nodes drop it
    # Wait here a while (cheap: the index is updated by events) rather than failing and
    # retrying at once: kopf logs every retry as an error, and most teardowns take seconds.
    # The index may not have listed every DamonNode yet (this replica just started): when it
    # finds nothing blocking, the apiserver must agree before the finalizer goes.
    deadline = time.monotonic() + TEARDOWN_WAIT_S
    while blocking := ctl.blocking_nodes(key) or await ctl.confirmed_blocking_nodes(key):
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(TEARDOWN_POLL_S)
    if blocking:
        shown = ", ".join(blocking[:10])
        if len(blocking) > 10:
            shown += f" and {len(blocking) - 10} more"
        raise kopf.TemporaryError(
            f"waiting for {len(blocking)} node(s) to tear it down: {shown}", delay=DELETE_RETRY_S
        )
    logger.info("%s is torn down on every live node", key)


@kopf.on.delete(GROUP, VERSION, "damonschemes", when=mine)
async def damon_scheme_deleted(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await _teardown("DamonScheme", body, memo, logger)


@kopf.on.delete(GROUP, VERSION, "clusterdamonschemes", when=mine)
async def cluster_damon_scheme_deleted(
    body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    await _teardown("ClusterDamonScheme", body, memo, logger)
