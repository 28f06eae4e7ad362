"""A fake DAMON sysfs tree on disk, for tests that cannot (or must not) use the host's.

``FakeDamonSysfs(root)`` lays the 6.18 tree out as plain files under ``root`` (a
``tmp_path``) and implements ``sysfs.SysfsIO`` with the kernel's reactions to writes:
``nr_*`` files recreate their children with the kernel's defaults (all of them, as the
kernel does), ``nr_kdamonds`` fails with EBUSY while a kdamond is on, enumerated files
refuse unknown names with EINVAL, and ``state`` commands act (``on`` gives a pid,
``update_schemes_tried_regions`` fills ``tried_regions`` from what the test scripted, with
the kernel's 0, 2, 4, ... names).

Fault injection: ``inject(pattern, errno, times)`` makes writes to paths matching the
glob ``pattern`` fail with ``errno``; ``garble(pattern, data)`` makes reads of them give
``data`` (garbage, a value cut short, bytes that are not text) whatever the file holds;
``omit`` leaves named files or directories out of
every directory created, as an older kernel would (``{"addr_unit", "intervals_goal"}``);
``obsolete_target=True`` adds 6.19's ``targets/N/obsolete_target``.

Targets are followed as the kernel runs them (``running_targets``, the pids per kdamond):
``on`` takes the staged ones; ``commit`` matches staged to running by index, removes the
running target an obsolete one matches and adds those beyond; ``inherited`` lists every
running target a commit gave another process (which then has the other's regions).

It is a fake of the interface, not of DAMON: it does not monitor anything.

``FakeTracefs(root)`` is the same for ``tracing.Tracefs``: a tracefs root with DAMON's
events whose new instances come with the control files the kernel gives them, and
``emit`` standing in for a kdamond: it appends trace lines to the ``trace_pipe`` of every
instance whose ``damon_aggregated`` event is on, as the kernel records events only then.
"""

from __future__ import annotations

import errno as errno_codes
import fnmatch
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from damon_agent.ops.kernel import model, tracing
from damon_agent.ops.kernel import sysfs as sysfs_io
from damon_agent.schemes import stats as scheme_stats

# What a 6.12 kernel's tree lacks (files and directories that came later, see
# ``capabilities.FEATURE_SINCE``): ``omit=NEWER_THAN_6_12`` fakes Debian 12's kernel.
NEWER_THAN_6_12 = frozenset(
    {
        "allow",
        "sz_ops_filter_passed",
        "intervals_goal",
        "core_filters",
        "ops_filters",
        "nid",
        "dests",
        "refresh_ms",
        "addr_unit",
        "goal_tuner",
    }
)

_NUMERIC_ENUMS = {
    "operations": model.OPERATIONS,
    "action": model.ACTIONS,
    "target_metric": model.QUOTA_GOAL_METRICS[:4],
    "metric": model.WATERMARK_METRICS,
}
_BOOLS = {"y": "Y", "yes": "Y", "1": "Y", "on": "Y", "n": "N", "no": "N", "0": "N", "off": "N"}
_COMMANDS = (
    "on",
    "off",
    "commit",
    "update_schemes_stats",
    "update_schemes_tried_regions",
    "update_schemes_tried_bytes",
    "clear_schemes_tried_regions",
    "update_schemes_effective_quotas",
    "update_tuned_intervals",
    "commit_schemes_quota_goals",
)


@dataclass
class _Fault:
    pattern: str
    errno: int
    times: int | None


class FakeDamonSysfs:
    def __init__(
        self,
        root: Path,
        *,
        avail_operations: Iterable[str] = ("paddr",),
        omit: Iterable[str] = (),
        first_pid: int = 4242,
        obsolete_target: bool = False,
    ) -> None:
        self._root = root
        self._avail = tuple(avail_operations)
        self._omit = frozenset(omit)
        self._obsolete_target = obsolete_target
        # The kernel's running targets (their pids) per kdamond, and each commit that
        # gave a running target another process: (the pid it had, the pid it got). A
        # running target keeps its regions through a commit, so that process inherits
        # the other's regions and their ages.
        self.running_targets: dict[int, list[int]] = {}
        self.inherited: list[tuple[int, int]] = []
        # Pids with no process: a start or commit naming one fails with EINVAL.
        self.exited: set[int] = set()
        # Memory cgroups that are gone: a start or commit naming one (a filter's
        # memcg_path, a goal's path) fails with ENOMEM, as the kernel's path lookup does.
        self.gone_memcgs: set[str] = set()
        self._next_pid = first_pid
        self._faults: list[_Fault] = []
        self._garbled: dict[str, bytes] = {}
        self._region_counter = 0
        self.tried: dict[tuple[int, int], list[model.TriedRegion]] = {}
        self.stats: dict[tuple[int, int], scheme_stats.SchemeCounters] = {}
        self.effective_bytes: dict[tuple[int, int], int] = {}
        self.tuned: dict[int, model.TunedIntervals] = {}
        self.log: list[tuple[str, str]] = []
        # Every read, for tests about how much the driver reads.
        self.reads: list[str] = []
        (root / "kdamonds").mkdir(parents=True, exist_ok=True)
        self._put("kdamonds/nr_kdamonds", "0")

    # ---- SysfsIO ----------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self._root

    def read(self, path: str) -> str:
        self.reads.append(path)
        try:
            data = (self._root / path).read_bytes()
        except OSError as err:
            raise sysfs_io.raise_for(err, path, None) from err
        data = next((d for p, d in self._garbled.items() if fnmatch.fnmatch(path, p)), data)
        return sysfs_io.decode(data, path).rstrip("\n")

    def listdir(self, path: str) -> list[str]:
        try:
            return [p.name for p in (self._root / path).iterdir()]
        except OSError as err:
            raise sysfs_io.raise_for(err, path, None) from err

    def exists(self, path: str) -> bool:
        return (self._root / path).exists()

    def read_table(self, path: str, entries: list[str], files: tuple[str, ...]) -> list[list[str]]:
        return [[self.read(f"{path}/{entry}/{name}") for entry in entries] for name in files]

    def write(self, path: str, value: str) -> None:
        try:
            self._write(path, value.strip())
        except OSError as err:
            raise sysfs_io.raise_for(err, path, value) from err
        self.log.append((path, value))

    # ---- test controls ----------------------------------------------------------------

    def inject(self, pattern: str, errno: int, times: int | None = None) -> None:
        """Fail writes to paths matching ``pattern`` with ``errno`` (``times`` times)."""
        self._faults.append(_Fault(pattern, errno, times))

    def garble(self, pattern: str, data: bytes) -> None:
        """Reads of existing files matching ``pattern`` give ``data`` from now on."""
        self._garbled[pattern] = data

    def start_foreign(self, index: int) -> int:
        """Turn a kdamond on as another tool would (no checks); return its pid."""
        return self._turn_on(index)

    # ---- the kernel's reactions ---------------------------------------------------------

    def _write(self, path: str, value: str) -> None:
        for fault in self._faults:
            if fnmatch.fnmatchcase(path, fault.pattern) and fault.times != 0:
                if fault.times is not None:
                    fault.times -= 1
                raise OSError(fault.errno, "injected")
        file = self._root / path
        if not file.is_file():
            raise OSError(errno_codes.ENOENT, "no such file")
        name = file.name
        parent = path.rsplit("/", 1)[0]
        if name == "nr_kdamonds":
            if any(self._kernel_read(f"kdamonds/{i}/state") == "on" for i in range(self._nr(path))):
                raise OSError(errno_codes.EBUSY, "busy")
            self._recreate(parent, _count(value), self._mk_kdamond)
        elif name == "nr_contexts":
            if _count(value) > 1:
                raise OSError(errno_codes.EINVAL, "one context only")
            self._recreate(parent, _count(value), self._mk_context)
        elif name == "nr_targets":
            self._recreate(parent, _count(value), self._mk_target)
        elif name == "nr_regions" and parent.endswith("/regions"):
            self._recreate(parent, _count(value), self._mk_region)
        elif name == "nr_schemes":
            self._recreate(parent, _count(value), self._mk_scheme)
        elif name == "nr_goals":
            self._recreate(parent, _count(value), self._mk_goal)
        elif name == "nr_filters":
            self._recreate(parent, _count(value), self._mk_filter)
        elif name == "nr_dests":
            self._recreate(parent, _count(value), self._mk_dest)
        elif name == "state":
            self._command(int(parent.rsplit("/", 1)[1]), value)
        elif name in _NUMERIC_ENUMS:
            if value not in _NUMERIC_ENUMS[name] or (
                name == "operations" and value not in self._avail and value != "vaddr"
            ):
                raise OSError(errno_codes.EINVAL, "unknown keyword")
            self._put(path, value)
        elif name == "type":
            self._filter_type(parent, value)
        elif name in ("matching", "allow", "obsolete_target"):
            if value.lower() not in _BOOLS:
                raise OSError(errno_codes.EINVAL, "not a boolean")
            self._put(path, _BOOLS[value.lower()])
        elif name in ("memcg_path", "path"):
            self._put(path, value)
        elif name in ("avail_operations", "pid", "effective_bytes", "total_bytes") or (
            "/stats/" in path or "/tried_regions/" in path
        ):
            raise OSError(errno_codes.EACCES, "read-only")
        else:
            try:
                number = int(value, 0)
            except ValueError:
                raise OSError(errno_codes.EINVAL, "not a number") from None
            if number < 0 and name not in ("target_nid", "nid", "pid_target"):
                raise OSError(errno_codes.EINVAL, "negative")
            self._put(path, str(number))

    def _filter_type(self, parent: str, value: str) -> None:
        if value not in model.FILTER_TYPES:
            raise OSError(errno_codes.EINVAL, "unknown filter type")
        layer = parent.rsplit("/", 2)[-2]
        is_core = value in model.CORE_FILTER_TYPES
        if (layer == "core_filters" and not is_core) or (layer == "ops_filters" and is_core):
            raise OSError(errno_codes.EINVAL, "filter type of the other layer")
        self._put(f"{parent}/type", value)

    def _command(self, index: int, command: str) -> None:
        if command not in _COMMANDS:
            raise OSError(errno_codes.EINVAL, "unknown command")
        base = f"kdamonds/{index}"
        running = self._kernel_read(f"{base}/state") == "on"
        if command == "on":
            if running:
                raise OSError(errno_codes.EBUSY, "already on")
            self._check_startable(base)
            staged = self._staged_targets(base)
            self._turn_on(index)
            self.running_targets[index] = [pid for pid, _ in staged]
            return
        if command == "off":
            if not running:
                raise OSError(errno_codes.EINVAL, "not running")
            self._put(f"{base}/state", "off")
            self._put(f"{base}/pid", "-1")
            return
        if not running:
            raise OSError(errno_codes.EINVAL, "not running")
        schemes = f"{base}/contexts/0/schemes"
        nr_schemes = self._nr(f"{schemes}/nr_schemes")
        if command == "commit":
            self._check_startable(base)
            self._commit_targets(index, base)
        elif command == "update_schemes_stats":
            for s in range(nr_schemes):
                stats = self.stats.get((index, s), scheme_stats.SchemeCounters())
                for key, number in vars(stats).items():
                    if self.exists(f"{schemes}/{s}/stats/{key}"):
                        self._put(f"{schemes}/{s}/stats/{key}", str(number))
        elif command in ("update_schemes_tried_regions", "clear_schemes_tried_regions"):
            for s in range(nr_schemes):
                self._fill_tried(f"{schemes}/{s}/tried_regions", (index, s), command)
        elif command == "update_schemes_tried_bytes":
            for s in range(nr_schemes):
                total = sum(r.end - r.start for r in self.tried.get((index, s), []))
                self._put(f"{schemes}/{s}/tried_regions/total_bytes", str(total))
        elif command == "update_schemes_effective_quotas":
            for s in range(nr_schemes):
                number = self.effective_bytes.get((index, s), 0)
                self._put(f"{schemes}/{s}/quotas/effective_bytes", str(number))
        elif command == "update_tuned_intervals" and index in self.tuned:
            intervals = f"{base}/contexts/0/monitoring_attrs/intervals"
            self._put(f"{intervals}/sample_us", str(self.tuned[index].sample_us))
            self._put(f"{intervals}/aggr_us", str(self.tuned[index].aggr_us))

    def _staged_targets(self, base: str) -> list[tuple[int, bool]]:
        """(pid_target, obsolete) of each staged target; EINVAL for an exited pid."""
        targets = f"{base}/contexts/0/targets"
        vaddr = self._kernel_read(f"{base}/contexts/0/operations") == "vaddr"
        staged = []
        for t in range(self._nr(f"{targets}/nr_targets")):
            obsolete = f"{targets}/{t}/obsolete_target"
            flagged = self.exists(obsolete) and self._kernel_read(obsolete) == "Y"
            pid = int(self._kernel_read(f"{targets}/{t}/pid_target"))
            if vaddr and pid in self.exited:
                raise OSError(errno_codes.EINVAL, f"no process {pid}")
            staged.append((pid, flagged))
        return staged

    def _commit_targets(self, index: int, base: str) -> None:
        """The kernel's commit of targets: matched by index; an obsolete one removes its
        match; one beyond the running ones is added (obsolete there: EINVAL)."""
        staged = self._staged_targets(base)
        running = self.running_targets.get(index, [])
        if any(obsolete for _, obsolete in staged[len(running) :]):
            raise OSError(errno_codes.EINVAL, "an obsolete target matches no running one")
        kept = []
        for position, had in enumerate(running):
            if position >= len(staged) or staged[position][1]:
                continue
            got = staged[position][0]
            if got != had:
                self.inherited.append((had, got))
            kept.append(got)
        self.running_targets[index] = kept + [pid for pid, _ in staged[len(running) :]]

    def _fill_tried(self, base: str, key: tuple[int, int], command: str) -> None:
        for old in self.listdir(base):
            if old.isdigit():
                shutil.rmtree(self._root / base / old)
        if command == "clear_schemes_tried_regions":
            self._put(f"{base}/total_bytes", "0")
            return
        total = 0
        for region in self.tried.get(key, []):
            # The kernel's names: a running counter bumped twice per region.
            name = str(self._region_counter)
            self._region_counter += 2
            for field_name in ("start", "end", "nr_accesses", "age", "sz_filter_passed"):
                self._put(f"{base}/{name}/{field_name}", str(getattr(region, field_name)))
            total += region.end - region.start
        self._put(f"{base}/total_bytes", str(total))

    def _check_startable(self, base: str) -> None:
        if self._nr(f"{base}/contexts/nr_contexts") != 1:
            raise OSError(errno_codes.EINVAL, "no context")
        ctx = f"{base}/contexts/0"
        lo = int(self._kernel_read(f"{ctx}/monitoring_attrs/nr_regions/min"))
        hi = int(self._kernel_read(f"{ctx}/monitoring_attrs/nr_regions/max"))
        if lo < 3 or hi < lo:
            raise OSError(errno_codes.EINVAL, "bad nr_regions")
        for name in ("memcg_path", "path"):
            for file in (self._root / ctx / "schemes").rglob(name):
                if file.read_text().strip() in self.gone_memcgs:
                    raise OSError(errno_codes.ENOMEM, "no such memory cgroup")

    def _turn_on(self, index: int) -> int:
        pid = self._next_pid
        self._next_pid += 1
        self._put(f"kdamonds/{index}/state", "on")
        self._put(f"kdamonds/{index}/pid", str(pid))
        return pid

    # ---- layout -------------------------------------------------------------------------

    def _nr(self, path: str) -> int:
        return int(self._kernel_read(path))

    def _kernel_read(self, path: str) -> str:
        # What the kernel itself holds: garbled reads are what a reader sees, not it.
        return (self._root / path).read_text().rstrip("\n")

    def _put(self, path: str, value: str) -> None:
        file = self._root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(value + "\n")

    def _files(self, base: str, files: dict[str, str]) -> None:
        for rel, value in files.items():
            if not set(rel.split("/")) & self._omit:
                self._put(f"{base}/{rel}", value)

    def _recreate(self, parent: str, count: int, make: Callable[[str], None]) -> None:
        for old in self.listdir(parent):
            if old.isdigit():
                shutil.rmtree(self._root / parent / old)
        for i in range(count):
            make(f"{parent}/{i}")
        self._put(f"{parent}/{_nr_name(parent)}", str(count))

    def _mk_kdamond(self, base: str) -> None:
        self._files(
            base,
            {"state": "off", "pid": "-1", "refresh_ms": "0", "contexts/nr_contexts": "0"},
        )

    def _mk_context(self, base: str) -> None:
        intervals = "monitoring_attrs/intervals"
        self._files(
            base,
            {
                "avail_operations": "\n".join(self._avail),
                "operations": "vaddr",
                "addr_unit": "1",
                f"{intervals}/sample_us": "5000",
                f"{intervals}/aggr_us": "100000",
                f"{intervals}/update_us": "60000000",
                f"{intervals}/intervals_goal/access_bp": "0",
                f"{intervals}/intervals_goal/aggrs": "0",
                f"{intervals}/intervals_goal/min_sample_us": "0",
                f"{intervals}/intervals_goal/max_sample_us": "0",
                "monitoring_attrs/nr_regions/min": "10",
                "monitoring_attrs/nr_regions/max": "1000",
                "targets/nr_targets": "0",
                "schemes/nr_schemes": "0",
            },
        )

    def _mk_target(self, base: str) -> None:
        self._files(base, {"pid_target": "0", "regions/nr_regions": "0"})
        if self._obsolete_target:
            self._put(f"{base}/obsolete_target", "N")

    def _mk_region(self, base: str) -> None:
        self._files(base, {"start": "0", "end": "0"})

    def _mk_scheme(self, base: str) -> None:
        files = {
            "action": "stat",
            "apply_interval_us": "0",
            "target_nid": "-1",
            "quotas/ms": "0",
            "quotas/bytes": "0",
            "quotas/reset_interval_ms": "0",
            "quotas/effective_bytes": "0",
            "quotas/weights/sz_permil": "0",
            "quotas/weights/nr_accesses_permil": "0",
            "quotas/weights/age_permil": "0",
            "quotas/goals/nr_goals": "0",
            "watermarks/metric": "none",
            "watermarks/interval_us": "0",
            "watermarks/high": "0",
            "watermarks/mid": "0",
            "watermarks/low": "0",
            "filters/nr_filters": "0",
            "core_filters/nr_filters": "0",
            "ops_filters/nr_filters": "0",
            "dests/nr_dests": "0",
            "tried_regions/total_bytes": "0",
        }
        for dim in ("sz", "nr_accesses", "age"):
            files[f"access_pattern/{dim}/min"] = "0"
            files[f"access_pattern/{dim}/max"] = "0"
        for stat in vars(scheme_stats.SchemeCounters()):
            files[f"stats/{stat}"] = "0"
        self._files(base, files)

    def _mk_goal(self, base: str) -> None:
        self._files(
            base,
            {"target_metric": "user_input", "target_value": "0", "current_value": "0", "nid": "0"},
        )

    def _mk_filter(self, base: str) -> None:
        self._files(
            base,
            {
                "type": "anon",
                "matching": "N",
                "allow": "N",
                "memcg_path": "",
                "addr_start": "0",
                "addr_end": "0",
                "min": "0",
                "max": "0",
                "damon_target_idx": "0",
            },
        )

    def _mk_dest(self, base: str) -> None:
        self._files(base, {"id": "0", "weight": "0"})


def _nr_name(parent: str) -> str:
    leaf = parent.rsplit("/", 1)[-1]
    if leaf in ("filters", "core_filters", "ops_filters"):
        return "nr_filters"
    return f"nr_{leaf}"


def _count(value: str) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise OSError(errno_codes.EINVAL, "not a number") from None
    if number < 0:
        raise OSError(errno_codes.EINVAL, "negative")
    return number


class FakeTracefs(tracing.Tracefs):
    """A tracefs tree on disk whose instances behave as the kernel's (module docstring)."""

    # What the kernel puts in a new instance that ``tracing.KdamondTrace`` uses.
    INSTANCE_FILES = (
        "buffer_size_kb",
        "trace",
        "trace_pipe",
        "options/context-info",
        f"{tracing.EVENT_DIR}/enable",
        f"{tracing.EVENT_DIR}/filter",
    )

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        (root / "instances").mkdir(parents=True, exist_ok=True)
        (root / tracing.EVENT_DIR).mkdir(parents=True, exist_ok=True)
        (root / tracing.EVENT_DIR / "format").write_text("name: damon_aggregated\n")

    def new_instance(self, name: str) -> Path:
        directory = super().new_instance(name)
        for file in self.INSTANCE_FILES:
            (directory / file).parent.mkdir(parents=True, exist_ok=True)
            (directory / file).write_text("0\n" if file.endswith("enable") else "")
        return directory

    def remove_instance(self, name: str) -> None:
        # The kernel removes an instance with its files; a plain directory needs rmtree.
        shutil.rmtree(self.root / "instances" / name)

    def event_enabled(self, name: str) -> bool:
        enable = self.root / "instances" / name / tracing.EVENT_DIR / "enable"
        return enable.read_text().strip() == "1"

    def emit(self, lines: bytes) -> None:
        """Trace ``lines`` into every instance whose event is on."""
        for name in self.our_instances():
            if self.event_enabled(name):
                with (self.root / "instances" / name / "trace_pipe").open("ab") as pipe:
                    pipe.write(lines)
