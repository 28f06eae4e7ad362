"""The operator's reconciling core: DamonNode specs and scheme statuses, coalesced.

kopf's handlers feed the ``Index`` and pass what became stale to ``Controller.note``.
Two kinds of work follow, both coalesced so that a burst of events costs one write per
object, and both skipping writes that would change nothing:

* node specs — one loop (``run_node_specs``) drains the set of stale node names after a
  short quiet period, computes each node's desired DamonNode spec, and creates, patches
  or (when the Node is really gone) deletes the DamonNode, a bounded number at a time;
* scheme statuses — one kopf daemon per scheme (``scheme_daemon``) waits for its wake-up
  (a DamonNode status it depends on changed, its spec changed, a node came or went) or a
  periodic resync (heartbeats age without events), then aggregates and writes its status
  only if it differs from what is stored; a change in the byte counters alone is written
  at most every ``totals_interval_s``, condition changes at once;
* Events — when a written status changes a scheme's Accepted, Ready or Degraded
  condition, the ``events`` module says what to post on the scheme; ``run_events``
  posts it on its own task, rate-limited per scheme and reason (``events.Correlator``,
  ``event_interval_s``), so neither loop waits on an Event.

At 1,000 nodes whose agents write every few seconds this is ~one parse per DamonNode
event and one pass over the targeted nodes per scheme per wake-up, in memory.

Peering: kopf pauses event handling and stops daemons while another replica of higher
priority is active; the node-spec loop only acts on what handlers marked stale, so a
paused replica stops writing too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from damon_agent.api import conditions, events, resources
from damon_operator import aggregation, index, kube, targeting, validation
from damon_operator import events as scheme_events

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Config:
    heartbeat_timeout_s: float = 60.0
    coalesce_s: float = 0.3
    resync_s: float = 10.0
    totals_interval_s: float = 10.0
    settle_s: float = 2.0
    max_parallel_writes: int = 8
    retry_backoff_s: float = 2.0
    event_interval_s: float = 60.0


class Controller:
    def __init__(
        self,
        cluster: index.Index,
        writer: kube.Writer,
        config: Config,
        *,
        clock: Callable[[], datetime.datetime] = conditions.now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = cluster
        self.writer = writer
        self.config = config
        self._clock = clock
        self._monotonic = monotonic
        self._stale_nodes: set[str] = set()
        self._all_nodes_stale = False
        self._nodes_wakeup = asyncio.Event()
        self._scheme_wakeups: dict[str, asyncio.Event] = {}
        self._written: dict[str, dict[str, Any]] = {}
        self._written_at: dict[str, float] = {}
        self._started = monotonic()
        self.status_writes = 0
        self.spec_writes = 0
        self.events = events.Recorder(
            events.Correlator(interval_s=config.event_interval_s),
            writer.post_event,
            failures=kube.WRITE_FAILURES,
            monotonic=monotonic,
            clock=clock,
        )

    # -- events in ---------------------------------------------------------------------------

    def note(self, stale: index.Stale) -> None:
        if stale.nodes or stale.all_nodes:
            self._stale_nodes |= stale.nodes
            self._all_nodes_stale = self._all_nodes_stale or stale.all_nodes
            self._nodes_wakeup.set()
        keys = self.index.schemes.keys() if stale.all_schemes else stale.schemes
        for key in keys:
            wakeup = self._scheme_wakeups.get(key)
            if wakeup is not None:
                wakeup.set()

    # -- node specs --------------------------------------------------------------------------

    async def run_node_specs(self) -> None:
        """Forever: wait for stale nodes, then bring their DamonNode specs up to date."""
        while True:
            await self._nodes_wakeup.wait()
            await asyncio.sleep(self.config.coalesce_s)
            self._nodes_wakeup.clear()
            if await self.sync_node_specs():
                await asyncio.sleep(self.config.retry_backoff_s)  # no hot loop on errors

    async def sync_node_specs(self) -> int:
        """Bring stale nodes' DamonNode specs up to date; returns how many writes failed."""
        if self._all_nodes_stale:
            names = set(self.index.nodes) | set(self.index.damon_nodes)
        else:
            names = set(self._stale_nodes)
        self._stale_nodes.clear()
        self._all_nodes_stale = False
        limit = asyncio.Semaphore(self.config.max_parallel_writes)

        async def one(name: str) -> bool:
            async with limit:
                try:
                    await self._sync_node(name)
                except Exception as err:  # log, retry on the next wake-up
                    _log_retry(f"DamonNode {name}: update failed", err)
                    self._stale_nodes.add(name)
                    self._nodes_wakeup.set()
                    return False
                return True

        done = await asyncio.gather(*(one(name) for name in sorted(names)))
        return done.count(False)

    async def _sync_node(self, name: str) -> None:
        node = self.index.nodes.get(name)
        current = self.index.damon_nodes.get(name)
        if node is None:
            # The index may not have listed Nodes yet: ask before deleting anything.
            if current is not None and not await self.writer.node_exists(name):
                logger.info("Node %s is gone: deleting its DamonNode", name)
                await self.writer.delete_damon_node(name)
                self.spec_writes += 1
            return
        desired = targeting.desired_spec(node, self.index.schemes.values(), self.index.namespaces)
        if current is not None and current.spec == desired:
            return
        logger.info(
            "DamonNode %s: %s spec with %d scheme(s)",
            name,
            "updating" if current else "creating",
            len(desired.get("schemes", [])),
        )
        await self.writer.put_damon_node_spec(
            name, desired, exists=current is not None, node_uid=node.uid
        )
        self.spec_writes += 1
        # Remember what was written until the watch event confirms it. Look the entry up
        # again: events (an agent's status, even) may have replaced it during the write.
        latest = self.index.damon_nodes.get(name)
        if latest is not None:
            latest.spec = desired
        else:
            self.index.damon_nodes[name] = index.DamonNodeEntry(name, desired, None)

    # -- scheme statuses ---------------------------------------------------------------------

    async def scheme_daemon(
        self, key: str, stored_status: Callable[[], Mapping[str, Any] | None], stopped: Any
    ) -> None:
        """Keep one scheme's status aggregated until kopf stops the daemon."""
        wakeup = self._scheme_wakeups.setdefault(key, asyncio.Event())
        wakeup.set()
        next_resync = self._monotonic()
        try:
            while not stopped:
                timeout = max(0.0, min(1.0, next_resync - self._monotonic()))
                try:
                    await asyncio.wait_for(wakeup.wait(), timeout=timeout)
                except TimeoutError:
                    if self._monotonic() < next_resync:
                        continue
                if stopped:
                    break
                settle = self._started + self.config.settle_s - self._monotonic()
                await asyncio.sleep(max(self.config.coalesce_s, settle))
                wakeup.clear()
                next_resync = self._monotonic() + self.config.resync_s
                try:
                    retry_in = await self.sync_scheme_status(key, stored_status())
                except Exception as err:  # log, retry on the next wake-up
                    _log_retry(f"{key}: status update failed", err)
                    retry_in = self.config.coalesce_s * 10
                if retry_in is not None:
                    next_resync = min(next_resync, self._monotonic() + retry_in)
        finally:
            self._scheme_wakeups.pop(key, None)

    async def sync_scheme_status(self, key: str, stored: Mapping[str, Any] | None) -> float | None:
        """Aggregate and write if changed; returns seconds until a deferred write is due."""
        entry = self.index.schemes.get(key)
        if entry is None or entry.deleting:
            return None
        now = self._clock()
        targeted = targeting.targeted_nodes(entry, self.index.nodes.values())
        outcomes = [
            aggregation.node_outcome(
                entry,
                name,
                self.index.damon_nodes.get(name),
                now=now,
                heartbeat_timeout_s=self.config.heartbeat_timeout_s,
            )
            for name in targeted
        ]
        tier_verdict = validation.ACCEPTED
        if entry.spec is not None:
            tier_verdict = self.tier_verdict(entry.spec)
        if tier_verdict.accepted != entry.tier_accepted:
            entry.tier_accepted = tier_verdict.accepted
            self.note(index.Stale(all_nodes=True))
        previous = aggregation.previous_status(stored)
        status = aggregation.aggregate(
            entry, outcomes, previous, tier_verdict=tier_verdict, now=now
        )
        new = aggregation.dump_status(status)
        as_stored = aggregation.dump_status(previous)
        last = self._written.get(key)
        if new in (as_stored, last):
            return None
        since = self._monotonic() - self._written_at.get(key, float("-inf"))
        reference = last if last is not None else as_stored
        if (
            not aggregation.differs_beyond_totals(new, reference)
            and since < self.config.totals_interval_s
        ):
            return self.config.totals_interval_s - since
        logger.info("%s: writing status (ready %s)", key, new.get("nodesReady", "-"))
        await self.writer.patch_scheme_status(entry.kind, entry.namespace, entry.name, new)
        self.status_writes += 1
        self._written[key] = new
        self._written_at[key] = self._monotonic()
        self._announce(entry, aggregation.previous_status(reference), status)
        return None

    def _announce(
        self,
        entry: index.SchemeEntry,
        before: resources.SchemeStatus,
        after: resources.SchemeStatus,
    ) -> None:
        about = events.ObjectRef(
            resources.API_VERSION, entry.kind, entry.name, entry.namespace, entry.uid
        )
        for occurrence in scheme_events.condition_events(
            about, before.conditions, after.conditions
        ):
            self.events.record(occurrence)

    async def run_events(self) -> None:
        """Forever: post the Events that condition changes made due."""
        await self.events.run()

    def tier_verdict(self, spec: validation.SchemeSpecModel) -> validation.Verdict:
        """``check_tiers`` over the nodes ``spec`` targets, with the tiers they reported.

        The scheme statuses use it, and the admission webhook warns with it at apply time.
        """
        targeted = [
            self.index.damon_nodes.get(node.name)
            for node in self.index.nodes.values()
            if targeting.selects_node(spec, node)
        ]
        return validation.check_tiers(spec, [index.node_tiers(entry) for entry in targeted])

    def forget(self, key: str) -> None:
        self._written.pop(key, None)
        self._written_at.pop(key, None)

    # -- deletion ----------------------------------------------------------------------------

    def blocking_nodes(self, key: str) -> list[str]:
        """Live nodes that still list the scheme: deletion waits for them.

        A node does not block when its Node object is gone, or its agent's heartbeat is
        missing or older than the timeout: nothing would ever tear the scheme down there.
        """
        now = self._clock()
        return [
            name
            for name, damon_node in sorted(self.index.damon_nodes.items())
            if name in self.index.nodes and self._runs(damon_node, key, now)
        ]

    async def confirmed_blocking_nodes(self, key: str) -> list[str]:
        """``blocking_nodes`` from what the apiserver holds now rather than the index.

        The index is fed by watch events, so a replica that has just started (after a
        crash, or a standby taking over) can run a deletion before it has listed a single
        DamonNode, and would find nothing blocking. A scheme is let go only once this
        agrees: one LIST of DamonNodes, and a read of each candidate's Node.
        """
        listed = index.Index()
        for body in await self.writer.list_damon_nodes():
            listed.put_damon_node(body)
        now = self._clock()
        return [
            name
            for name, damon_node in sorted(listed.damon_nodes.items())
            if self._runs(damon_node, key, now) and await self.writer.node_exists(name)
        ]

    def _runs(self, damon_node: index.DamonNodeEntry, key: str, now: datetime.datetime) -> bool:
        """Whether the node lists the scheme and its agent is alive to tear it down."""
        if not damon_node.lists(key):
            return False
        age = damon_node.heartbeat_age(now)
        return age is not None and age <= self.config.heartbeat_timeout_s


def _log_retry(what: str, err: Exception) -> None:
    if kube.unreachable(err):
        logger.warning(
            "%s (the apiserver is unreachable: %s); will retry", what, kube.first_line(err)
        )
    else:
        logger.exception("%s; will retry", what)
