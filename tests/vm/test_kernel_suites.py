"""The ``kernel`` tests, run on each kernel of the VM's matrix: one guest boot per kernel.

Every test marked ``kernel`` (the kernel driver, tracing, the standalone agent, the
kernel backend, memcg filters, the two-agent end-to-end, and on the kernels of
``USERSPACE_ON`` the userspace backend) runs inside a guest the project booted with that
kernel, never on the host's DAMON, which may belong to the machine. On 6.1, which has no
DAMON, only the tests that need none run (``WITHOUT_DAMON``): the userspace backend's. The
guest is ours, so DAMON_STAT, which Debian's kernels from 6.17 on start at boot and which
holds DAMON exclusively, is turned off first (the tests of living beside it turn it on
again themselves). The guest reaches the host's control plane (QEMU user networking), so
the ``kube`` tests among them run there too, with the host's kubeconfig pointed at
10.0.2.2, on the kernels of ``WITH_CONTROL_PLANE``.

The in-guest pytest writes a line per finished test into the share (``suite_report``);
this test fails naming every test that failed or erred there, with its message, and fails
on skips too (nothing here may skip). A guest whose kernel dies of the emulator's int3 race
(``harness.VmConfig``) is booted again to run only the tests it had not finished, up to
``SUITE_ATTEMPTS`` boots in all. The counts per kernel go into the VM figures of the
terminal summary. Before the tests, the guest probes its DAMON (``damon-agent probe
--json``); the probe must equal the kernel's file in docs/capabilities/, which the README's
capability table renders. ``DAMON_K8S_KERNEL_SUITE_ARGS`` passes extra pytest arguments to
the guests (``-k NAME``). ``DAMON_K8S_SUITE_REPORTS=DIR`` keeps each kernel's report of
its tests as ``DIR/kernel-SERIES.jsonl``, which ``bench/reliability_table.py
--suite-report`` reads for the rows whose tests run in the guests.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness
import kube_support
import pytest
import suite_report
import yaml

pytestmark = pytest.mark.vm

# Debian 12's stock 6.1 (no DAMON at all: the userspace backend is all a node has), 6.12
# (reject-only filters), trixie-backports' 6.18 (allow filters, DAMON_STAT at boot) and
# the newest complete 7.x.
KERNEL_MATRIX = ("6.1", "6.12", "6.18", "7.3")
# What runs where DAMON does not: the kernel tests that need none (tests/userspace).
WITHOUT_DAMON = {"6.1": ("tests/userspace",)}
# The kernel tests that also need the control plane (two agents and the operator, a
# handover, DAMON_STAT reported through the operator) take about 7 of a suite's 15 minutes,
# mostly Python starting agents under emulation. They run on the newest kernel (allow
# filters, DAMON_STAT at boot). The oldest DAMON of the matrix, 6.12 with reject-only
# filters, runs the same paths through the control plane in tests/vm/test_vm_cluster.py
# (the reject-only rewrite end to end) and tests/vm/test_deployed.py (a real kubelet node,
# the agent's successor adopting its kdamonds).
WITH_CONTROL_PLANE = ("7.3",)
# The userspace backend's tests (tests/userspace: idle page tracking or soft-dirty,
# process_madvise, move_pages; about 100 s a guest) run where it is what a node has, 6.1,
# and on the newest kernel. The interfaces it uses have not changed in between; the DAMON
# kernels in the middle would only repeat them (and CI's 90 minutes are counted).
USERSPACE_ON = ("6.1", "7.3")
GUEST_API = "https://10.0.2.2:6443"
CAPABILITIES = Path(__file__).resolve().parents[2] / "docs" / "capabilities"
# Emulated guests run Python several times slower than the host: the whole suite of one
# kernel gets this long before the guest powers itself off.
SUITE_DEADLINE_S = 1200.0
# Boots per kernel when a guest dies of the emulator's int3 race: each runs what the ones
# before it did not finish (the race is rare, a few per hour of emulated kernel time).
SUITE_ATTEMPTS = 3
REPORT = "results.jsonl"


@dataclass
class SuiteResult:
    tests: int = 0
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # record_property("figures", ...)


def summarise(outcomes: list[suite_report.TestOutcome]) -> SuiteResult:
    """Pass, failure and skip per finished test of the guests' reports."""
    result = SuiteResult()
    for test in outcomes:
        result.tests += 1
        name = test.nodeid.rsplit("::", 1)[-1]
        result.figures += [f"{name}: {figure}" for figure in test.figures]
        if test.outcome == "failed":
            result.failed.append(f"{test.nodeid}: {test.message or '(no message)'}")
        elif test.outcome == "skipped":
            result.skipped.append(f"{test.nodeid}: {test.message}")
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
export PYTHONPATH="$REPO/tests/support${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m pytest -m "{markers}" -p no:cacheprovider -p suite_report -q -rfEs \\
    --basetemp=/tmp/pytest-kernel {args} {paths}
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

    def suite(finished: list[str]) -> harness.GuestRun:
        extra = shlex.split(args) + [f"--deselect={nodeid}" for nodeid in finished]
        if series not in USERSPACE_ON:
            extra.append("--ignore=tests/userspace")
        return harness.boot(
            GUEST_SCRIPT.replace("{args}", " ".join(shlex.quote(a) for a in extra))
            .replace("{paths}", " ".join(WITHOUT_DAMON.get(series, ())))
            .replace(
                "{markers}", "kernel" if series in WITH_CONTROL_PLANE else "kernel and not kube"
            ),
            config=harness.VmConfig(net=True, deadline_s=SUITE_DEADLINE_S),
            files={"kubeconfig": guest_kubeconfig},
            assets=assets,
            work_dir=tmp_path,
            env={
                "DAMON_K8S_KERNEL_UNDER_TEST": series,
                "DAMON_K8S_KUBECONFIG": f"{harness.SHARE_IN_GUEST}/kubeconfig",
                suite_report.ENV: f"{harness.SHARE_IN_GUEST}/{REPORT}",
            },
        )

    outcomes: list[suite_report.TestOutcome] = []
    log = tmp_path / f"kernel-suite-{series}.log"
    for attempt in range(1, SUITE_ATTEMPTS + 1):
        run = suite([test.nodeid for test in outcomes])
        outcomes += suite_report.read_report(run.path(REPORT))
        with log.open("a") as out:
            out.write(f"=== boot {attempt} ===\n{run.stdout}{run.stderr}")
        vm_figures.record_run(run)
        if run.rc is not None or not harness.died_of_int3(run.console):
            break
        # The emulator's race with the kernel's run-time text patching (harness.VmConfig):
        # the tests that finished stand; the rest run in a fresh guest.
        vm_figures.record(emulator_int3_oops_resumed=len(outcomes))
        sys.stderr.write(
            f"\n{series}: guest oopsed on int3 after {len(outcomes)} test(s); the rest again\n"
        )
    kept_reports = os.environ.get("DAMON_K8S_SUITE_REPORTS")
    if kept_reports:
        keep = Path(kept_reports) / f"kernel-{series}.jsonl"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_text("".join(outcome.to_line() + "\n" for outcome in outcomes))
    if run.rc is None:
        pytest.fail(f"the {series} guest's pytest never ended ({log})\n{run.describe()}")
    result = summarise(outcomes)
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
