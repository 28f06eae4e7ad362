"""The ``kernel`` tests, run on each kernel of the VM's matrix: one guest boot per kernel.

Every test marked ``kernel`` (the kernel driver, tracing, the standalone agent, the
kernel backend, memcg filters, the two-agent end-to-end, the userspace backend) runs
inside a guest the project booted with that kernel, never on the host's DAMON, which may
belong to the machine. On 6.1, which has no DAMON, only the tests that need none run
(``WITHOUT_DAMON``): the userspace backend's. The
guest is ours, so DAMON_STAT, which Debian's kernels from 6.17 on start at boot and which
holds DAMON exclusively, is turned off first (the tests of living beside it turn it on
again themselves). The guest reaches the host's control plane (QEMU user networking), so
the ``kube`` tests among them run there too, with the host's kubeconfig pointed at
10.0.2.2.

The in-guest pytest writes JUnit XML into the share; this test fails naming every test
that failed or erred there, with its message, and fails on skips too (nothing here may
skip). The counts per kernel go into the VM figures of the terminal summary. Before the
tests, the guest probes its DAMON (``damon-agent probe --json``); the probe must equal the
kernel's file in docs/capabilities/, which the README's capability table renders.
``DAMON_K8S_KERNEL_SUITE_ARGS`` passes extra pytest arguments to the guests (``-k NAME``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness
import kube_support
import pytest
import yaml

pytestmark = pytest.mark.vm

# Debian 12's stock 6.1 (no DAMON at all: the userspace backend is all a node has), 6.12
# (reject-only filters), trixie-backports' 6.18 (allow filters, DAMON_STAT at boot) and
# the newest complete 7.x.
KERNEL_MATRIX = ("6.1", "6.12", "6.18", "7.3")
# What runs where DAMON does not: the kernel tests that need none (tests/userspace).
WITHOUT_DAMON = {"6.1": ("tests/userspace",)}
GUEST_API = "https://10.0.2.2:6443"
CAPABILITIES = Path(__file__).resolve().parents[2] / "docs" / "capabilities"
# Emulated guests run Python several times slower than the host: the whole suite of one
# kernel gets this long before the guest powers itself off.
SUITE_DEADLINE_S = 1200.0


@dataclass
class SuiteResult:
    tests: int = 0
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # record_property("figures", ...)


def parse_junit(xml_text: str) -> SuiteResult:
    """Pass, failure and skip per test case of a pytest JUnit XML report."""
    result = SuiteResult()
    for case in ET.fromstring(xml_text).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        result.tests += 1
        for prop in case.iter("property"):
            if prop.get("name") == "figures":
                result.figures.append(f"{case.get('name', '')}: {prop.get('value', '')}")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            result.failed.append(f"{name}: {message[0] if message else '(no message)'}")
        elif skip is not None:
            result.skipped.append(f"{name}: {skip.get('message', '')}")
        else:
            result.passed += 1
    return result


@pytest.fixture(scope="module")
def guest_kubeconfig() -> Iterator[str]:
    """The host's admin kubeconfig, pointed at the host as the guest sees it."""
    with kube_support.held_controlplane() as kubeconfig:
        config = yaml.safe_load(kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = GUEST_API
        yield yaml.safe_dump(config)


GUEST_SCRIPT = """
stat=/sys/module/damon_stat/parameters/enabled
if [ -f "$stat" ] && [ "$(cat "$stat")" = Y ]; then
    echo N > "$stat" && echo "kernel suite: DAMON_STAT was on at boot; turned off" >&2
fi
cd "$REPO"
"$PY" -m damon_agent.cli.agent probe --json > "$SHARE/capabilities.json"
exec "$PY" -m pytest -m kernel -p no:cacheprovider -q -rfEs --basetemp=/tmp/pytest-kernel \\
    --junitxml="$SHARE/junit.xml" -o junit_family=xunit1 {args} {paths}
"""


@pytest.mark.parametrize("series", KERNEL_MATRIX)
def test_kernel_suite_passes_in_the_guest(
    series: str,
    guest_kubeconfig: str,
    tmp_path: Path,
    vm_figures: harness.Figures,
) -> None:
    try:
        assets = harness.VmAssets.from_cache(series=series)
    except harness.VmAssetsMissingError as error:
        pytest.fail(str(error))
    args = os.environ.get("DAMON_K8S_KERNEL_SUITE_ARGS", "")  # e.g. "-k tracing", by hand

    def suite(single_threaded_tcg: bool) -> harness.GuestRun:
        return harness.boot(
            GUEST_SCRIPT.replace(
                "{args}", " ".join(shlex.quote(a) for a in shlex.split(args))
            ).replace("{paths}", " ".join(WITHOUT_DAMON.get(series, ()))),
            config=harness.VmConfig(
                net=True, deadline_s=SUITE_DEADLINE_S, single_threaded_tcg=single_threaded_tcg
            ),
            files={"kubeconfig": guest_kubeconfig},
            assets=assets,
            work_dir=tmp_path,
            env={
                "DAMON_K8S_KERNEL_UNDER_TEST": series,
                "DAMON_K8S_KUBECONFIG": f"{harness.SHARE_IN_GUEST}/kubeconfig",
            },
        )

    run = suite(single_threaded_tcg=False)
    if not run.path("junit.xml").is_file() and "Oops: int3" in run.console:
        # The emulator's race with the kernel's run-time text patching (harness.VmConfig):
        # the whole suite once more, on one host thread, where that race cannot happen.
        vm_figures.record(emulator_int3_oops_retried=True)
        sys.stderr.write(f"\n{series}: guest oopsed on int3 under multi-threaded TCG; again\n")
        run = suite(single_threaded_tcg=True)
    log = tmp_path / f"kernel-suite-{series}.log"
    log.write_text(run.stdout + run.stderr)
    junit = run.path("junit.xml")
    if not junit.is_file():
        pytest.fail(f"the {series} guest wrote no JUnit report ({log})\n{run.describe()}")
    result = parse_junit(junit.read_text())
    vm_figures.record_run(run)
    vm_figures.record(
        release=assets.release, tests=result.tests, passed=result.passed,
        failed=len(result.failed), skipped=len(result.skipped),
    )  # fmt: skip
    sys.stderr.write(f"\n--- kernel suite on {assets.release} ---\n{run.stdout[-1500:]}\n")
    for line in result.figures:
        vm_figures.record(**{line.split(":", 1)[0]: line.split(":", 1)[1].strip()})
    problems = result.failed + [f"skipped (nothing may skip): {s}" for s in result.skipped]
    assert not problems, (
        f"{len(problems)} problem(s) in the {assets.release} guest (full output: {log}):\n"
        + "\n".join(problems)
        + f"\n--- pytest output (tail) ---\n{run.stdout[-4000:]}"
    )
    assert result.tests > 0, f"no kernel test ran in the guest:\n{run.describe()}"
    probed = json.loads(run.text("capabilities.json"))
    kept = json.loads((CAPABILITIES / f"{series}.json").read_text())
    differ = {
        key: (probed.get(key), kept.get(key))
        for key in ("method", "operations", "actions", "filter_types", "goal_metrics", "features")
        if probed.get(key) != kept.get(key)
    }
    assert not differ, (
        f"the {assets.release} probe (first) and docs/capabilities/{series}.json (second) "
        f"disagree: {differ}; run scripts/capability-table {series}"
    )
    assert run.rc == 0, f"pytest exited {run.rc} in the guest:\n{run.describe()}"
