"""``NAMESPACE/NAME``: how a flag names one namespaced Kubernetes object.

Shared by the agent (``--owner-daemonset``) and the operator (``--stop-deployment``), so
both accept and refuse the same spellings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamespacedName:
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> NamespacedName:
        """``ValueError`` unless ``text`` is two non-empty parts around one slash."""
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"{text!r} is not NAMESPACE/NAME")
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
