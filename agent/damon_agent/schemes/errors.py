"""The exception tree of ``damon_agent.schemes`` (drawn in the package docstring)."""

from __future__ import annotations


class SchemesError(Exception):
    """Base of every error raised by the DAMOS engine."""


class SchemeConfigError(SchemesError):
    """A scheme cannot run as configured (e.g. ops-layer filters on operations without them)."""


class MetricUnavailableError(SchemesError):
    """A metric source could not read a metric; the engine keeps the last known value."""
