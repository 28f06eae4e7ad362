"""Names without models: the API's group, version, kinds and plurals, a scheme's key, and
``NAMESPACE/NAME`` as a flag names one namespaced Kubernetes object.

Kept apart from ``resources`` (pydantic models) so that what only names objects starts
fast: the uninstall hook (``damon-operator release-finalizers``) imports no model, and on
a busy emulated node each import it avoids is seconds. ``resources`` re-exports these.
``NamespacedName`` is shared by the agent (``--owner-daemonset``) and the operator
(``--stop-deployment``), so both accept and refuse the same spellings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GROUP = "damon.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

Kind = Literal["DamonScheme", "ClusterDamonScheme"]
SCHEME_KINDS: tuple[str, ...] = ("DamonScheme", "ClusterDamonScheme")
PLURALS: dict[str, str] = {
    "DamonScheme": "damonschemes",
    "ClusterDamonScheme": "clusterdamonschemes",
    "DamonNode": "damonnodes",
}


def scheme_key(kind: str, namespace: str | None, name: str) -> str:
    """``DamonScheme/ns/name`` or ``ClusterDamonScheme/name``: a scheme's identity."""
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


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
