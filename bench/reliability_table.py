"""Rewrite the table of faults in docs/reliability.md from test results.

Each row of ``ROWS`` is a fault the project tries, what happens, and the tests that show
it (pytest node ids, a parametrized test counting as all its cases). The results come
from a JUnit XML file of a pytest run:

    # run the rows' tests that can run here (not vm, not kernel), then write the table
    .venv/bin/python bench/reliability_table.py --run
    # or from runs made elsewhere: a pytest run's JUnit XML, and the kernel suites' reports
    # (the tests run inside the VM guests; DAMON_K8S_SUITE_REPORTS=DIR keeps them there)
    .venv/bin/python bench/reliability_table.py --junit results.xml [--junit more.xml] \
        [--suite-report DIR/kernel-7.3.jsonl ...]

and the table between the ``reliability-table`` markers of docs/reliability.md is
rewritten with each row's result: ``passed (N)``, ``FAILED (k of N)``, or, for tests the
results do not hold, where they run (``not run: vm``, ``not run: kernel``, ...) so that a
reader knows to look at CI. ``--check`` exits 1 if the file would change (nothing written).

A run writing JUnit XML needs ``-o junit_family=legacy`` (``--run`` passes it): tests that
``record_property`` their figures fail under pytest's default family, xunit2, which warns
of it (and warnings are errors here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
START = "<!-- reliability-table:start (bench/reliability_table.py writes this) -->"
END = "<!-- reliability-table:end -->"
# Markers pytest here leaves out: they boot VM guests or drive the kernel under test.
NOT_HERE = ("vm", "kernel")


@dataclasses.dataclass(frozen=True)
class Row:
    fault: str
    outcome: str
    tests: tuple[str, ...]
    runs_in: str = ""  # "vm" or "kernel": where its tests run when not here


ROWS: tuple[Row, ...] = (
    Row(
        "`kill -9` of the agent at random points (100 cycles), real kdamonds",
        "the successor adopts or stops every kdamond it made, calls none foreign; "
        "`nr_kdamonds` back to 0",
        ("tests/kernel/test_kill9_cycles.py::test_kill_9_at_random_points_leaves_no_orphan",),
        runs_in="kernel",
    ),
    Row(
        "a crash at every step of start/commit/stop (fake sysfs)",
        "recovery finds its own kdamonds, touches nothing foreign",
        ("tests/kernel/test_driver_crashes.py::test_a_crash_at_any_step_leaves_nothing_foreign",),
    ),
    Row(
        "agent pod replaced (DaemonSet update) with kdamonds running",
        "the successor adopts them; none turned off between",
        (
            "tests/kube/runtime/test_handover_e2e.py"
            "::test_a_replaced_agent_hands_its_kdamonds_to_its_successor",
            "tests/runtime/test_handover.py::test_no_successor_coming_turns_the_kdamonds_off",
        ),
    ),
    Row(
        "`kill -9` of the operator during a scheme deletion, a live node still running it",
        "a new operator waits for that node as the first did (asking the apiserver, not its "
        "half-listed index), then lets the finalizer go; no DamonNode keeps the scheme",
        (
            "tests/kube/test_operator_faults.py"
            "::test_an_operator_killed_mid_deletion_is_succeeded_and_the_deletion_completes",
        ),
    ),
    Row(
        "the active one of two peered operator replicas killed with `kill -9`",
        "the standby resumes when the dead one's peering record expires (~5 s at a 6 s "
        "lifetime) and rewrites nothing; a change then costs 1 DamonNode spec write, 1 status",
        (
            "tests/kube/test_operator_faults.py"
            "::test_the_standby_takes_over_from_a_killed_leader_and_writes_nothing_twice",
        ),
    ),
    Row(
        "a scheme edited 50 times in 10 s",
        "the node's DamonNode and the status end on the last generation; writes coalesced "
        "(~26 DamonNode spec writes, at most one per 0.3 s window)",
        (
            "tests/kube/test_operator_faults.py"
            "::test_fifty_edits_in_ten_seconds_end_on_the_last_generation_with_bounded_writes",
        ),
    ),
    Row(
        "SIGTERM while an apply is in the kernel (a kdamond's start or online commit held)",
        "the apply finishes, then every kdamond the agent made is turned off and the list "
        "emptied, its record removed; the daemon exits 0",
        (
            "tests/runtime/test_agent_faults.py"
            "::test_sigterm_during_an_apply_stops_every_kdamond_it_made",
            "tests/kube/runtime/test_agent_faults_e2e.py"
            "::test_sigterm_during_an_apply_turns_off_every_kdamond_and_exits_0",
        ),
    ),
    Row(
        "the state directory deleted under a running agent (kernel backend, fake sysfs)",
        "the record of its kdamonds written again at the next status build, logged naming "
        "the file; never taken for someone else's; a successor adopts them; SIGTERM stops all "
        "and gives DAMON_STAT back when it took it over",
        (
            "tests/runtime/test_agent_faults.py"
            "::test_a_deleted_state_directory_is_written_again_and_nothing_is_lost",
            "tests/runtime/test_agent_faults.py"
            "::test_a_state_directory_deleted_while_idle_still_stops_everything",
            "tests/runtime/test_agent_faults.py"
            "::test_a_deleted_state_directory_still_gives_damon_stat_back",
        ),
    ),
    Row(
        "the state directory deleted under a running kdamond, real kernel",
        "the record written again as it was; the kdamond not taken for foreign; `stop` "
        "turns it off; `nr_kdamonds` back to 0",
        (
            "tests/kernel/test_agent_faults_kernel.py"
            "::test_a_deleted_state_directory_loses_no_kdamond_of_the_real_kernel",
        ),
        runs_in="kernel",
    ),
    Row(
        "the state directory full (a 64 KiB tmpfs)",
        "the apply fails naming the file and `No space left on device` (`ApplyFailed`, and "
        "`DamonAvailable` says it); the loop goes on; applied and recorded once there is "
        "room; SIGTERM still stops every kdamond",
        (
            "tests/runtime/test_agent_faults.py"
            "::test_a_full_state_directory_fails_the_apply_naming_it_and_loses_nothing",
            "tests/runtime/test_agent_faults.py"
            "::test_a_full_state_directory_at_the_stop_still_stops_everything",
        ),
    ),
    Row(
        "the agent's DamonNode deleted by hand",
        "what ran is torn down (nothing assigned); the operator makes it again (0.4 s); the "
        "agent plans it afresh and its status is on the new object at once (0.8 s)",
        (
            "tests/kube/runtime/test_agent_faults_e2e.py"
            "::test_a_damonnode_deleted_by_hand_is_made_again_and_the_agent_converges",
            "tests/runtime/test_agent_faults.py::test_a_damonnode_made_again_gets_a_status_at_once",
        ),
    ),
    Row(
        "the agent's Node deleted while it runs",
        "its DamonNode goes too, its schemes are torn down; the agent waits for one, alive "
        "and idle (0.2 % of a CPU, a 404 status write not retried); the Node back, it runs again",
        (
            "tests/kube/runtime/test_agent_faults_e2e.py"
            "::test_a_deleted_node_neither_crashes_nor_spins_the_agent",
            "tests/runtime/test_agent_faults.py"
            "::test_a_status_write_that_finds_no_damonnode_is_not_retried",
        ),
    ),
    Row(
        "kube-apiserver frozen, stopped, restarted",
        "the agent's loop goes on, status written again once it is back; the operator "
        "tears nothing down (node spec untouched), resumes kopf if a watch got the "
        "restart's 404, and converges within one resync",
        (
            "tests/kube/runtime/test_apiserver_outage.py"
            "::test_the_loop_goes_on_through_an_apiserver_freeze_stop_and_restart",
        ),
    ),
    Row(
        "uninstall with schemes left (release finalizers)",
        "only this instance's finalizers go; the operator is scaled to 0 first",
        (
            "tests/kube/test_release_finalizers.py"
            "::test_release_finalizers_removes_only_this_instances_finalizer",
            "tests/kube/test_release_finalizers.py::test_stop_deployment_scales_it_to_zero_first",
        ),
    ),
    Row(
        "invalid scheme specs the CRD schema lets through (26 classes)",
        "`kubectl apply` refused by the webhook, word for word the operator's verdict",
        (
            "tests/kube/test_admission.py"
            "::test_kubectl_apply_refuses_what_the_operator_would_not_accept",
        ),
    ),
    Row(
        "scheme specs drawn from the CRDs, right and broken in one place (hypothesis)",
        "`validation.judge` never raises; every refusal names fields the spec has; "
        "a one-place break is refused naming that place",
        (
            "tests/api/test_spec_fuzz.py"
            "::test_judge_answers_every_spec_of_the_schemas_shape_naming_real_fields",
            "tests/api/test_spec_fuzz.py"
            "::test_a_spec_broken_in_one_place_is_refused_naming_that_place",
            "tests/api/test_spec_fuzz.py::test_judge_never_raises_on_json_of_any_shape",
        ),
    ),
    Row(
        "drawn specs through `kubectl apply --dry-run=server` and the webhook",
        "let in only when judged valid, else refused naming a field; operator not restarted, "
        "no traceback",
        (
            "tests/kube/test_spec_fuzz_apiserver.py"
            "::test_drawn_specs_are_let_in_only_when_judged_valid_and_refusals_name_a_field",
        ),
    ),
    Row(
        "a DamonNode spec that does not parse (nine shapes)",
        "`Ready` false naming the field, one `InvalidSpec` event, nothing applied, the "
        "loop goes on and takes the fixed spec",
        ("tests/runtime/test_daemon_loop.py::test_a_garbage_spec_is_named_and_the_loop_goes_on",),
    ),
    Row(
        "garbage, cut-short or non-text values in DAMON sysfs files",
        "`SysfsError` naming the file and quoting it (a condition), never a `ValueError`",
        (
            "tests/kernel/test_sysfs_garbage.py::test_a_reader_names_the_file_that_holds_no_number",
            "tests/kernel/test_sysfs_garbage.py::test_recover_and_probe_name_the_file_too",
            "tests/kernel/test_sysfs_garbage.py::test_host_sysfs_read_paths_name_a_garbled_file",
        ),
    ),
    Row(
        "pods' processes leave and join a running vaddr kdamond",
        "no process is given another's regions: running targets keep their order, new ones "
        "go last, a gone one is removed alone (`obsolete_target`, 6.19; before it the "
        "kernel shifts those after it)",
        (
            "tests/kernel/test_target_churn_fake.py"
            "::test_a_gone_pid_is_removed_alone_where_the_kernel_has_obsolete_target",
            "tests/kernel/test_target_churn_fake.py::test_new_pids_go_after_the_running_ones",
            "tests/kernel/test_target_churn_kernel.py"
            "::test_a_gone_process_leaves_the_others_their_own_regions",
        ),
        runs_in="kernel",
    ),
    Row(
        "a pod's memory cgroup removed between the plan and the commit (paddr, memcg filters)",
        "the engine leaves the gone memcg out (the kernel refuses a whole commit naming one; "
        "before 6.15 it stops the kdamond); a scheme left no pod is made inert, never "
        "node-wide; a refused commit no longer loses the kdamond to the agent's stop",
        (
            "tests/kernel/test_memcg_churn_fake.py"
            "::test_a_pod_deleted_before_the_commit_leaves_the_kdamond_running_on_the_rest",
            "tests/kernel/test_memcg_churn_fake.py"
            "::test_a_pod_deleted_between_the_check_and_the_commit_is_retried_without_it",
            "tests/kernel/test_memcg_churn_fake.py"
            "::test_a_scheme_whose_every_pod_is_gone_is_made_inert_not_node_wide",
            "tests/kernel/test_memcg_churn_fake.py"
            "::test_a_refused_commit_leaves_the_kdamond_the_engines_to_stop",
            "tests/kernel/test_memcg_churn_kernel.py"
            "::test_a_removed_pod_cgroup_leaves_the_kdamond_running_on_the_others",
        ),
        runs_in="kernel",
    ),
    Row(
        "pods created and deleted under vaddr, paddr and auto schemes (7.3 guest, real "
        "apiserver and operator), with a 2,000-process pod: 30 a minute in CI; 100 a "
        "minute for 10 minutes by hand (below)",
        "every pod reached the kernel while it lived (1000 of 1000 at 100 a minute, p99 "
        "19 s); after the churn the kernel runs exactly the live pods (no leaked target or "
        "memcg filter); no kdamond restarted, no scheme degraded; the 2,000-process pod "
        "runs on paddr through its memcg",
        (
            "tests/vm/test_vm_pod_churn.py"
            "::test_pods_churning_under_schemes_leave_the_kernel_exactly_the_live_pods",
        ),
        runs_in="vm",
    ),
    Row(
        "a sudden memory-pressure spike (`memory.high` squeezed below the hot set, in a guest)",
        "the pageout quota fed the pod's PSI brakes to 1 MiB or less within two reset "
        "intervals of the feed (0.41 s at a 1 s interval; 1.65 s from the squeeze)",
        (
            "tests/vm/test_vm_psi.py"
            "::test_a_pressure_spike_brakes_the_quota_within_two_reset_intervals",
        ),
        runs_in="vm",
    ),
    Row(
        "PSI files missing (no CONFIG_PSI, `cgroup.pressure` off)",
        "PSI absent from the status, goal metric unavailable, named; the loop goes on",
        (
            "tests/runtime/test_observing_bad_files.py"
            "::test_missing_psi_files_are_absent_facts_and_named_errors",
        ),
    ),
    Row(
        "garbage in PSI and cgroup files; a process named with non-text bytes",
        "`MalformedFileError` naming the file; the fact absent; names kept as they are",
        (
            "tests/runtime/test_observing_bad_files.py"
            "::test_garbled_psi_files_are_absent_facts_and_named_errors",
            "tests/runtime/test_observing_bad_files.py"
            "::test_garbled_cgroup_counts_are_named_errors",
            "tests/runtime/test_observing_bad_files.py"
            "::test_a_process_named_with_bytes_that_are_not_text_is_read",
        ),
    ),
    Row(
        "a recording cut at any byte",
        "`damonctl report` renders what is whole and warns of the torn line, or refuses "
        "the file in one message",
        (
            "tests/cli/test_damonctl_cut_recordings.py"
            "::test_a_cut_recording_renders_or_is_refused_with_a_message",
            "tests/reports/test_recording.py::test_torn_last_line_is_dropped_and_flagged",
        ),
    ),
)


@dataclasses.dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    skipped: int = 0


def read_junit(path: Path) -> dict[str, Tally]:
    """Node id without parameters (``path.py::test``) -> its cases' results."""
    results: dict[str, Tally] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        node = classname.replace(".", "/") + ".py::" + name.split("[", 1)[0]
        tally = results.setdefault(node, Tally())
        if case.find("failure") is not None or case.find("error") is not None:
            tally.failed += 1
        elif case.find("skipped") is not None:
            tally.skipped += 1
        else:
            tally.passed += 1
    return results


def read_suite_report(path: Path) -> dict[str, Tally]:
    """The same from a kernel suite's report (tests/support/suite_report.py: one JSON line
    per finished test, ``nodeid`` and ``outcome``); a line cut short is left out."""
    results: dict[str, Tally] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            node, outcome = str(entry["nodeid"]).split("[", 1)[0], str(entry["outcome"])
        except (ValueError, KeyError, TypeError):
            continue
        tally = results.setdefault(node, Tally())
        if outcome == "passed":
            tally.passed += 1
        elif outcome == "skipped":
            tally.skipped += 1
        else:
            tally.failed += 1
    return results


def merge(*sources: Mapping[str, Tally]) -> dict[str, Tally]:
    """Several runs' results as one: a test's cases counted across them."""
    merged: dict[str, Tally] = {}
    for source in sources:
        for node, tally in source.items():
            total = merged.setdefault(node, Tally())
            total.passed += tally.passed
            total.failed += tally.failed
            total.skipped += tally.skipped
    return merged


def result_of(row: Row, results: Mapping[str, Tally]) -> str:
    found = [results[t] for t in row.tests if t in results]
    if len(found) < len(row.tests):
        where = row.runs_in or "in this run"
        return f"not run: {where} (see CI)" if row.runs_in else f"not run {where}"
    total = Tally(*(sum(getattr(t, f) for t in found) for f in ("passed", "failed", "skipped")))
    cases = total.passed + total.failed + total.skipped
    if total.failed:
        return f"FAILED ({total.failed} of {cases})"
    if total.skipped:
        return f"skipped ({total.skipped} of {cases})"
    return f"passed ({cases})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(rows: Sequence[Row], results: Mapping[str, Tally]) -> str:
    lines = [
        "| fault tried | what happens | tests | result |",
        "|---|---|---|---|",
    ]
    for row in rows:
        tests = "<br>".join(f"`{t.split('::')[0].removeprefix('tests/')}::"
                            f"{t.split('::')[1]}`" for t in row.tests)  # fmt: skip
        lines.append(
            f"| {_cell(row.fault)} | {_cell(row.outcome)} | {tests} | {result_of(row, results)} |"
        )
    return "\n".join(lines)


def rewrite(document: str, table: str) -> str:
    """``document`` with the text between the markers replaced by ``table``."""
    if START not in document or END not in document:
        raise SystemExit(f"{DOC}: the markers {START!r} and {END!r} are missing")
    head, rest = document.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def run_tests(rows: Sequence[Row], junit: Path) -> None:
    """pytest on the rows' test files that run here, results into ``junit``."""
    files = sorted({t.split("::")[0] for row in rows if not row.runs_in for t in row.tests})
    marks = " and ".join(f"not {m}" for m in NOT_HERE)
    subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-m", marks),
            *("-o", "junit_family=legacy", f"--junitxml={junit}", *files),
        ],
        cwd=REPO,
        check=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--junit", type=Path, action="append", default=[],
        help="JUnit XML of a pytest run (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--suite-report", type=Path, action="append", default=[],
        help="a kernel suite's report of the tests run in a VM guest (repeatable)",
    )  # fmt: skip
    parser.add_argument("--run", action="store_true", help="run the tests that run here")
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is stale")
    args = parser.parse_args(argv)
    if args.run == bool(args.junit or args.suite_report):
        parser.error("give either --run or results (--junit, --suite-report)")
    if args.run:
        with tempfile.TemporaryDirectory() as scratch:
            junit = Path(scratch) / "junit.xml"
            run_tests(ROWS, junit)
            results = read_junit(junit)
    else:
        for path in [*args.junit, *args.suite_report]:
            if not path.is_file():
                parser.error(f"{path}: no such file")
        results = merge(
            *(read_junit(path) for path in args.junit),
            *(read_suite_report(path) for path in args.suite_report),
        )
    before = DOC.read_text()
    after = rewrite(before, render(ROWS, results))
    if args.check:
        return 0 if after == before else 1
    DOC.write_text(after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
