"""The exceptions of ``damon_agent.reports``.

::

    ReportError                  anything a report or a recording cannot do with its input
     +-- RecordingError          a recording file that cannot be read or written
     |                           (names the line number and the field)
     +-- SelectionError          a valid recording that does not hold what was asked for
     |                           (no snapshot at --at TIME, no scheme stats, ...)
     +-- OutputError             a report that could not be written (e.g. the PNG's path)

CLIs catch ``ReportError``, print its message and exit non-zero; nothing here prints.
"""

from __future__ import annotations


class ReportError(Exception):
    """Base of every error raised by ``damon_agent.reports``."""


class RecordingError(ReportError):
    """A recording that is malformed, of an unknown version, or cannot be opened."""


class SelectionError(ReportError):
    """The recording is valid but lacks what the report was asked to show."""


class OutputError(ReportError):
    """A report was made but could not be written where asked."""
