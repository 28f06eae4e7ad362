"""Pure DAMOS: data-access-aware operation schemes, with the kernel's semantics.

A scheme acts (``pageout``, ``migrate_hot``, ...) on the monitored regions whose access
pattern (size, access rate, age) falls in closed ranges, within a quota. The modules,
bottom up:

- ``model``: the canonical, integer-only scheme dataclasses (``Scheme`` and its parts).
- ``conversion``: api spec (human units) -> ``model`` and ``core.attrs.MonitoringAttrs``.
- ``patterns``: which regions match an access pattern (vectorised).
- ``quotas``: hot/cold scores, the size-weighted score histogram threshold, the charge
  window and the effective size quota (time quota with throughput estimation, size quota).
- ``tuners``: quota goals and the two goal tuners (``consist`` feedback, ``temporal``),
  with metrics read through the injected ``MetricSource``.
- ``watermarks``: the high/mid/low activation state machine.
- ``filters``: core-layer filters (addr, target); ops-layer filters go to the operations.
- ``stats``: per-scheme counters and the tried regions of the last apply.
- ``engine``: ``SchemesEngine``, the ``core.interfaces.SchemesHook`` the monitor calls.

Nothing here does I/O: metrics come through ``tuners.MetricSource``, actions through the
operations set, time through ``now_us`` arguments (and an injectable action timer).

Exceptions::

    Exception
     └── SchemesError                 (errors.py)
          ├── SchemeConfigError       a scheme the engine cannot run with these operations
          └── MetricUnavailableError  a MetricSource could not read a metric
"""
