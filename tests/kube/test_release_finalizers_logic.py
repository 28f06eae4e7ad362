"""``damon-operator release-finalizers`` without a cluster: which objects are selected,
the patch that removes the finalizer, and the retries and passes (through a fake)."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import kubernetes
import pytest

from damon_operator import cli, kube, release

OURS = kube.finalizer("blue")
FOREIGN = "example.com/keep"


def body(
    name: str, finalizers: list[str], namespace: str | None = "shop", instance: str = "blue"
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {kube.INSTANCE_LABEL: instance},
        "finalizers": finalizers,
    }
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta}


def test_selects_only_objects_holding_this_instances_finalizer() -> None:
    objects = [
        body("a", [FOREIGN, OURS]),
        body("b", [FOREIGN]),
        body("c", []),
        body("d", [OURS], instance="green"),  # another instance's, even with our name
        {"metadata": {"name": "e"}},
    ]
    assert release.select("DamonScheme", objects, OURS, "blue") == [
        release.Target("DamonScheme", "shop", "a", 1)
    ]
    # Without an instance every object counts (the label is not looked at).
    assert [t.name for t in release.select("DamonScheme", objects, OURS, None)] == ["a", "d"]
    cluster = release.holding("ClusterDamonScheme", body("x", [OURS], namespace=None), OURS, None)
    assert cluster == release.Target("ClusterDamonScheme", None, "x", 0)
    assert str(cluster) == "ClusterDamonScheme x"
    assert str(release.Target("DamonScheme", "shop", "a", 1)) == "DamonScheme shop/a"


def test_removal_tests_the_index_before_removing() -> None:
    target = release.Target("DamonScheme", "shop", "a", 2)
    assert release.removal(target, OURS) == [
        {"op": "test", "path": "/metadata/finalizers/2", "value": OURS},
        {"op": "remove", "path": "/metadata/finalizers/2"},
    ]
    assert release.label_selector("blue") == "damon.io/instance=blue"
    assert release.label_selector(None) is None


class FakeSchemes:
    """Objects by (kind, namespace, name); applies JSON Patches of test+remove."""

    def __init__(self, objects: dict[tuple[str, str | None, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.refuse: dict[str, int] = {}  # name -> HTTP status of the next patch
        self.before_patch: list[Any] = []  # callables run before each patch
        self.after_patch: list[Any] = []  # ... and after each one that applied
        self.patches = 0

    def list_all(self, kind: str, selector: str | None) -> list[dict[str, Any]]:
        return [obj for (k, _, _), obj in self.objects.items() if k == kind]

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def patch(self, target: release.Target, patch: list[dict[str, Any]]) -> None:
        self.patches += 1
        for hook in self.before_patch:
            hook()
        status = self.refuse.pop(target.name, None)
        if status is not None:
            raise kubernetes.client.ApiException(status=status, reason="Refused")
        obj = self.objects.get((target.kind, target.namespace, target.name))
        if obj is None:
            raise kubernetes.client.ApiException(status=404, reason="Not Found")
        finalizers = obj["metadata"]["finalizers"]
        test, _ = patch
        index = int(test["path"].rsplit("/", 1)[1])
        if index >= len(finalizers) or finalizers[index] != test["value"]:
            raise kubernetes.client.ApiException(status=422, reason="Unprocessable Entity")
        del finalizers[index]
        for hook in self.after_patch:
            hook()


def test_a_concurrent_change_is_read_again_and_retried() -> None:
    a = body("a", [FOREIGN, OURS])
    fake = FakeSchemes({("DamonScheme", "shop", "a"): a})

    def someone_else_inserts_one_first() -> None:
        if a["metadata"]["finalizers"] == [FOREIGN, OURS]:
            a["metadata"]["finalizers"].insert(0, "example.com/new")

    fake.before_patch.append(someone_else_inserts_one_first)
    out = io.StringIO()
    summary = release.release(fake, "blue", out)
    assert a["metadata"]["finalizers"] == ["example.com/new", FOREIGN]
    assert [t.name for t in summary.released] == ["a"] and not summary.failed
    assert fake.patches == 2
    assert out.getvalue() == f"released DamonScheme shop/a: removed finalizer {OURS}\n"


def test_gone_objects_count_apart_and_refusals_fail_naming_the_object() -> None:
    fake = FakeSchemes(
        {
            ("DamonScheme", "shop", "gone"): body("gone", [OURS]),
            ("DamonScheme", "shop", "denied"): body("denied", [OURS]),
            ("ClusterDamonScheme", None, "ok"): body("ok", [OURS], namespace=None),
        }
    )
    fake.refuse = {"gone": 404, "denied": 403}
    summary = release.release(fake, "blue", io.StringIO())
    assert [t.name for t in summary.gone] == ["gone"]
    assert [t.name for t in summary.released] == ["ok"]
    assert summary.failed == ["cannot patch DamonScheme shop/denied: HTTP 403 Refused"]


def test_retries_are_bounded() -> None:
    fake = FakeSchemes({("DamonScheme", "shop", "a"): body("a", [OURS])})

    def conflict_always() -> None:
        fake.refuse["a"] = 409

    fake.before_patch.append(conflict_always)
    summary = release.release(fake, "blue", io.StringIO(), retries=3)
    assert fake.patches == 3
    assert summary.failed == ["DamonScheme shop/a: its finalizers kept changing (3 attempts)"]


def test_passes_repeat_while_a_running_operator_adds_it_back() -> None:
    a = body("a", [OURS])
    fake = FakeSchemes({("DamonScheme", "shop", "a"): a})
    added_back = 2

    def operator_adds_it_back() -> None:
        nonlocal added_back
        if added_back and OURS not in a["metadata"]["finalizers"]:
            a["metadata"]["finalizers"].append(OURS)
            added_back -= 1

    fake.after_patch.append(operator_adds_it_back)
    summary = release.release_until_settled(fake, "blue", io.StringIO(), interval_s=0)
    assert a["metadata"]["finalizers"] == [] and not summary.failed
    assert len(summary.released) == 1 + 2  # the next passes released it again
    # An operator that never stops: the passes end, and say why.
    a["metadata"]["finalizers"] = [OURS]
    fake.after_patch = [lambda: a["metadata"]["finalizers"].append(OURS)]
    stuck = release.release_until_settled(fake, "blue", io.StringIO(), passes=3, interval_s=0)
    assert stuck.failed == [
        f"{OURS} was added back in each of 3 passes: is the operator still running?"
    ]


def test_bad_credentials_and_arguments_exit_non_zero(tmp_path: Any) -> None:
    err = io.StringIO()
    assert release.main(["--kubeconfig", str(tmp_path / "none")], io.StringIO(), err) == 1
    assert "cannot load Kubernetes credentials" in err.getvalue()
    with pytest.raises(SystemExit) as raised:
        release.main(["--stop-deployment", "no-slash"])
    assert raised.value.code == 2


def test_the_command_runs_the_release_without_importing_kopf() -> None:
    # The uninstall hook's interpreter starts on a node that may be busy, and Helm waits
    # for it: the console script must not pay for the operator's imports.
    probe = (
        "import sys\n"
        "from damon_operator import cli\n"
        "try:\n"
        "    cli.main(['release-finalizers', '--help'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        "print(sorted(m for m in ('kopf', 'aiohttp', 'damon_operator.main') if m in sys.modules))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "damon-operator release-finalizers" in ran.stdout, ran.stdout
    assert ran.stdout.splitlines()[-1] == "[]", ran.stdout


def test_the_command_runs_the_operator_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    assert "--peering" in capsys.readouterr().out


def _pod(deleting: bool, *states: str) -> dict[str, Any]:
    """A pod as the API's JSON has it, its containers in the given states."""
    state: dict[str, dict[str, Any]] = {
        "terminated": {"terminated": {"exitCode": 0, "reason": "Completed"}},
        "running": {"running": {"startedAt": "2026-12-04T00:00:00Z"}},
    }
    statuses = [
        {"name": f"c{i}", "ready": False, "restartCount": 0, "state": state[s]}
        for i, s in enumerate(states)
    ]
    metadata: dict[str, Any] = {"name": "operator-0"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-04T00:00:00Z"
    return {"metadata": metadata, "status": {"containerStatuses": statuses} if statuses else {}}


def test_a_pod_has_stopped_once_marked_and_all_its_containers_terminated() -> None:
    assert release.stopped(_pod(True, "terminated"))
    assert release.stopped(_pod(True, "terminated", "terminated"))
    # One container still running, or none reported yet: it may still write.
    assert not release.stopped(_pod(True, "terminated", "running"))
    assert not release.stopped(_pod(True))
    # Not marked for deletion: kubelet may restart it.
    assert not release.stopped(_pod(False, "terminated"))
