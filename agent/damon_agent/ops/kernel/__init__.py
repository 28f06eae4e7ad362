"""The kernel backend: the host kernel's DAMON, driven through its sysfs interface.

Modules, from data to action:

- ``model``: the sysfs tree as typed, frozen dataclasses, with the kernel's own names;
- ``writes``: configuration -> ordered sysfs writes, a pure function (golden-tested);
- ``sysfs``: the one I/O interface (``SysfsIO``) and the host implementation; ``fake``
  is an on-disk fake tree with the kernel's reactions and fault injection;
- ``applying``: performs writes and state commands (``on``, ``commit``, ``off``);
- ``reading``: state-command readers (stats, tried regions, quotas, tuned intervals);
- ``tracing``: snapshots from DAMON's ``damon_aggregated`` trace events (a private
  tracefs instance per kdamond), the cheaper alternative to tried regions;
- ``capabilities``: feature probing and the kernel version that brought each feature;
- ``ownership``: which kdamonds the agent created, across restarts;
- ``holders``: who else holds DAMON (a DAMON module running exclusively, foreign
  kdamonds) and what frees it; ``takeover``: the opt-in turning DAMON_STAT off while the
  agent runs, and back on after;
- ``driver``: the facade joining them; ``damon``: ``KernelDamon``, a plan's contexts on
  kdamonds, on top;
- ``from_scheme``: canonical schemes (``damon_agent.schemes.model``) and monitoring
  attributes (``damon_agent.core.attrs``) -> ``model``;
- ``iomem``: the physical RAM ranges a paddr context monitors.

Errors: one tree, in ``errors``.
"""
