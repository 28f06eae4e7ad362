"""The exceptions of ``damon_agent.runtime``.

::

    AgentError                     anything the agent daemon cannot do
     +-- ArgumentsError            bad command-line arguments or environment (names the flag)
     +-- BackendError              a backend could not start, or refused or failed an operation
     |    +-- ApplyError           a plan could not be applied (the previous one keeps running;
     |                             ``reason``: the status condition reason it gives)
     +-- KubeError                 the API server refused a request or was unreachable
     +-- SnapshotFetchError        ``/v1/snapshot`` of an agent could not be fetched or read
     |    +-- SnapshotAccessError  the agent refused the request (401, 403) or could not check
     |                             it (503); ``code``: the HTTP status
     +-- RunError                  ``damon-agent run`` cannot do what its inputs ask (a scheme
                                   the node cannot plan, a --pid that is gone)

Per-scheme problems found while planning (a mode the node cannot do, no matching pods) are
not exceptions: the planner returns them as data, and they become status conditions.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error raised by ``damon_agent.runtime``."""


class ArgumentsError(AgentError):
    """A command-line flag or environment variable has a value the daemon cannot use."""


class BackendError(AgentError):
    """A monitoring backend failed."""


class ApplyError(BackendError):
    """A plan could not be applied; what ran before keeps running.

    ``reason`` is the status condition reason the schemes get on this node: ``ApplyFailed``,
    or a more telling one (``DamonHeld``: someone else holds the node's DAMON).
    """

    def __init__(self, message: str, reason: str = "ApplyFailed") -> None:
        self.reason = reason
        super().__init__(message)


class KubeError(AgentError):
    """A Kubernetes API request failed; ``code``: the HTTP status, when one came back."""

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class SnapshotFetchError(AgentError):
    """An agent's snapshot endpoint could not be fetched or its answer read."""


class SnapshotAccessError(SnapshotFetchError):
    """The agent refused to serve the snapshot (401, 403) or could not check who asked (503)."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


class RunError(AgentError):
    """``damon-agent run`` cannot do what its inputs ask; the message names the input."""
