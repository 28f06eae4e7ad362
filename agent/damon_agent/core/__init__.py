"""The pure monitoring core: regions, sampling, adaptive split/merge, aging, intervals
auto-tuning and snapshots, with the kernel's DAMON semantics.

No I/O happens here. The clock, the random source and the operations set are injected
(see ``interfaces``), so a seeded run on the ``sim`` operations is reproducible. Region
state is kept as numpy arrays (``regions.TargetRegions``): the cost of one sampling
interval is O(number of regions), never O(memory size).
"""
