"""Reports: snapshots and recordings turned into text and pictures.

- ``recording``: the versioned JSON-lines recording format (writer and reader); the
  format is documented in docs/recording-format.md.
- ``access``, ``wss``, ``heatmap``, ``schemes``, ``footprints``: one module per report,
  each a pure function from snapshots (or records) to text; ``heatmap`` also draws a PNG.
- ``units``, ``percentiles``: human units and the percentile rule the reports share.
- ``node_stat``: DAMON_STAT's figures (idle-time percentiles, estimated bandwidth) from a
  snapshot of the node's physical memory, for the agent that took DAMON_STAT's place.

Nothing here prints: the CLIs (``damon_agent.cli``) print what these return. Errors::

    ReportError
     +-- RecordingError     unreadable or malformed recording (names line and field)
     +-- SelectionError     valid recording lacking what was asked (time, records)
     +-- OutputError        a report that could not be written (PNG path)
"""
