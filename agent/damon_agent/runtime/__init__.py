"""The node agent: the control loop between Kubernetes and a monitoring backend.

Modules, in the order of the loop (``daemon``)::

    kube         watch the node's DamonNode and pods (asyncio, aiohttp)
    observing    pods -> cgroups, memcgs, pids; node PSI and NUMA tiers (node facts)
    planning     assigned schemes + pods + capabilities -> Plan (pure)
    backends     Plan -> backend online: kernel (sysfs commit), userspace or sim (the
                 project's own monitor and DAMOS engine, ``backends.inprocess``)
    feedback     per-pod memory PSI -> user_input quota goals
    status       Plan + outcome + counters -> DamonNode status; write throttling
    http         /metrics (metrics), /healthz, /readyz, /v1/snapshot (wire),
                 /v1/snapshots (the recent ones: history); who may read them: guard
                 (bearer tokens, TokenReview + SubjectAccessReview)
    history      the bounded ring of recent snapshots ``damonctl record`` starts from

``backend.Backend`` is the one interface both loops drive: the daemon's, and
``standalone``'s, which is the same path without a cluster (``damon-agent run``).
``snapshot_client`` is the live source of ``damonctl report access --agent``.
Exceptions: ``errors`` (one tree).
"""
