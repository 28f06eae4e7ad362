"""Facts of the node the agent runs on, and the userspace actions it can take.

Modules (each reads fresh on every call, with the ``/proc`` and ``/sys`` roots injected so
that tests point them at checked-in fake trees):

- ``cgroups``: hierarchies (cgroup v2, cgroup v1 memory), the kubelet's driver, pod UID ->
  pod cgroup -> container cgroups -> pids, memcg paths for DAMOS memcg filters.
- ``psi``: pressure stall information, system-wide and per cgroup.
- ``numa``: nodes, CPUs, memory, distances, memory tiers, DRAM/CXL classification,
  per-process placement (numa_maps, move_pages queries).
- ``kernel_tiering``: the kernel's own tiering settings (NUMA balancing, demotion), read
  only.
- ``meminfo``: /proc/meminfo and per-node meminfo, the DAMOS watermark and goal ratios.
- ``procfs``: process footprints (rss, vsz) and liveness.
- ``files``: reading their text: strictly for the kernel's numbers, keeping any bytes in names.
- ``actions``: pageout and cold through process_madvise, migration through move_pages.
- ``syscalls``: the ctypes bindings under ``actions`` and ``numa``.
- ``pagemap``: virtual to physical frames through /proc/PID/pagemap.

Exceptions (``errors``)::

    NodeError                      base of everything raised here
     +-- InvalidArgumentError           also a ValueError: names the argument and the reason
     +-- FactUnavailableError           a /proc or /sys file is missing or unreadable
     +-- MalformedFileError             a file's content is not in the kernel's format
     +-- ProcessGoneError               the process exited (readers; actions report it instead)
     +-- CgroupError
     |    +-- CgroupLayoutUnknownError  no cgroup2 mount and no cgroup v1 memory mount
     |    +-- KubepodsNotFoundError     no kubepods cgroup for either kubelet driver
     |    +-- CgroupNotFoundError       no such cgroup directory
     |         +-- PodCgroupNotFoundError        the pod has no cgroup on this node
     |         +-- ContainerCgroupNotFoundError  the container has no cgroup under its pod
     +-- PressureUnavailableError       no PSI: kernel without it, or a cgroup v1 cgroup
     +-- UnsupportedPlatformError       no system call numbers for this architecture
     +-- ActionFailedError              an action failed as a whole (EPERM, ENODEV, ...)

``pagemap`` raises its own ``PagemapError`` (an ``OSError``), outside this tree for now.

A process exiting during an action is not an error: the action's result says ``exited``.
"""
