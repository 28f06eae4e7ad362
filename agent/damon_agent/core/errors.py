"""Errors of the monitoring core.

The core refuses configurations the kernel would refuse (``damon_set_attrs`` returns
-EINVAL for them) and target layouts it cannot monitor; everything else is a bug::

    Exception
     └── CoreError
          ├── InvalidAttrsError (also ValueError): monitoring attributes out of range
          └── InvalidLayoutError (also ValueError): a target's address ranges are unusable
"""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the monitoring core raises."""


class InvalidAttrsError(CoreError, ValueError):
    """Monitoring attributes the kernel would refuse; the message names the field."""


class InvalidLayoutError(CoreError, ValueError):
    """Address ranges of a target that cannot be monitored (empty, overlapping, unsorted)."""
