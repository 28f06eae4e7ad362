"""The node agent: the control loop between Kubernetes and a monitoring backend.

Modules, in the order of the loop (``daemon``)::

    kube         watch the node's DamonNode and pods (asyncio, aiohttp)
    observing    pods -> cgroups, memcgs, pids; node PSI and NUMA tiers (node facts)
    planning     assigned schemes + pods + capabilities -> Plan (pure)
    applying     Plan -> backend online (kernel sysfs commit, or the in-process sim)
    feedback     per-pod memory PSI -> user_input quota goals
    status       Plan + outcome + counters -> DamonNode status; write throttling
    http         /metrics (metrics), /healthz, /readyz, /v1/snapshot (wire)

``engine.Engine`` is the one interface the loop drives; ``snapshot_client`` is the live
source of ``damonctl report access --agent``. ``standalone`` and ``standalone_kernel``
run without a cluster (``damon-agent run``). Exceptions: ``errors`` (one tree).
"""
