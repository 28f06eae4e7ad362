"""The ``damon-operator`` command: the operator itself (``main``), or the one-shot
``release-finalizers`` (``release``), each importing only what it runs.

The uninstall hook starts a fresh interpreter on whatever node the Job lands on, often a
busy one, and Helm waits for it: kopf and aiohttp are more than half of the operator's
import time (0.63 s against 0.37 s for the release alone, measured on the host) and the
release needs neither.
"""

from __future__ import annotations

import sys

RELEASE_FINALIZERS = "release-finalizers"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == [RELEASE_FINALIZERS]:
        from damon_operator import release  # noqa: PLC0415 - only the release's imports

        return release.main(arguments[1:])
    from damon_operator import main as operator  # noqa: PLC0415 - kopf, only for the operator

    return operator.main(arguments)
