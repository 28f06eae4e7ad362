"""cgroups of a Kubernetes node: pod UID -> pod cgroup -> container cgroups -> pids.

Paths. Every cgroup path this module takes or returns is relative to the root of its
hierarchy and starts with ``/`` (``/kubepods.slice/kubepods-burstable.slice/...``): the form
``/proc/PID/cgroup`` shows, and the form DAMON's memcg filter wants in its sysfs
``memcg_path`` file (the kernel compares it with ``cgroup_path()`` of each memory cgroup,
which is rooted at the hierarchy, not at a mount point). ``Hierarchy.directory`` maps a path
to the directory under the injected ``/sys`` root.

Discovery (``discover``) reads ``/proc/self/mountinfo``: the ``cgroup2`` mount is the v2
hierarchy (its controllers from ``cgroup.controllers``); the memory controller is on v2 when
listed there, otherwise on the ``cgroup`` (v1) mount whose super options name ``memory``,
as on hybrid hosts. The kubelet's cgroup driver shows in the tree: ``kubepods.slice``
(systemd) or ``kubepods`` (cgroupfs), looked for on the memory hierarchy first.

Kubelet layouts (QoS Guaranteed pods sit directly under the kubepods cgroup)::

    systemd   /kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<UID, - as _>.slice
              /kubepods.slice/kubepods-pod<UID, - as _>.slice
    cgroupfs  /kubepods/<qos>/pod<UID>
              /kubepods/pod<UID>

Container cgroups under a pod: ``cri-containerd-<id>.scope``, ``crio-<id>.scope``,
``docker-<id>.scope`` (systemd driver), the bare ``<id>`` (cgroupfs driver with containerd)
or ``crio-<id>`` (cgroupfs driver with CRI-O). CRI-O's ``crio-conmon-<id>.scope`` holds the
container monitor, not the container, and is skipped. The pod sandbox ("pause") container
is listed like any other: callers match the IDs from the pod's status.

Everything is read fresh on each call: pods come and go between two calls.
"""

from __future__ import annotations

import enum
import errno
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from damon_agent.node import errors, files

_POD_UID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$")
_CONTAINER_DIR = re.compile(
    r"^(?:(?P<prefix>cri-containerd|crio|docker)-)?(?P<id>[0-9a-f]{12,128})(?P<scope>\.scope)?$"
)
_RUNTIME_OF_PREFIX = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}
_SYSTEMD_POD = re.compile(
    r"^kubepods(?:-(?:burstable|besteffort))?-pod(?P<uid>[0-9A-Za-z_]+)\.slice$"
)
_CGROUPFS_POD = re.compile(r"^pod(?P<uid>[0-9A-Za-z-]+)$")


class Driver(enum.StrEnum):
    """The kubelet's cgroup driver (its ``cgroupDriver`` setting)."""

    SYSTEMD = "systemd"
    CGROUPFS = "cgroupfs"


class QoSClass(enum.StrEnum):
    """A pod's QoS class; values are the cgroup name parts, ``from_kubernetes`` maps status."""

    GUARANTEED = "guaranteed"
    BURSTABLE = "burstable"
    BEST_EFFORT = "besteffort"

    @classmethod
    def from_kubernetes(cls, qos_class: str) -> QoSClass:
        """Map a pod's ``status.qosClass`` (``Guaranteed``, ``Burstable``, ``BestEffort``)."""
        by_name = {
            "Guaranteed": cls.GUARANTEED,
            "Burstable": cls.BURSTABLE,
            "BestEffort": cls.BEST_EFFORT,
        }
        try:
            return by_name[qos_class]
        except KeyError:
            raise errors.InvalidArgumentError(
                "qos_class", f"{qos_class!r} is not one of {', '.join(by_name)}"
            ) from None


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy."""

    version: int  # 1 or 2
    mount_point: Path  # where it is visible, under the injected /sys root
    mount_root: str  # the hierarchy path mounted there ("/" unless in a cgroup namespace)
    controllers: frozenset[str]

    def contains(self, cgroup_path: str) -> bool:
        """Whether the mount shows this cgroup (always, unless a subtree is mounted)."""
        pure = PurePosixPath(normalize(cgroup_path))
        root = PurePosixPath(self.mount_root)
        return pure == root or root in pure.parents

    def directory(self, cgroup_path: str) -> Path:
        """The directory of a hierarchy-rooted cgroup path under this mount."""
        path = normalize(cgroup_path)
        if not self.contains(path):
            raise errors.InvalidArgumentError(
                "cgroup_path",
                f"{path} is outside the mounted part of the hierarchy ({self.mount_root})",
            )
        relative = PurePosixPath(path).relative_to(PurePosixPath(self.mount_root))
        return self.mount_point / relative if str(relative) != "." else self.mount_point


@dataclass(frozen=True)
class CgroupLayout:
    """What ``discover`` found: hierarchies, where memory is controlled, the kubelet's driver."""

    unified: Hierarchy | None  # the cgroup v2 hierarchy, with or without memory
    memory: Hierarchy | None  # the hierarchy holding the memory controller (v2 or v1)
    driver: Driver | None  # None when the node has no kubepods cgroup
    pods: Hierarchy | None  # the hierarchy the kubepods cgroup was found on

    @property
    def memory_version(self) -> int | None:
        """1 on hybrid hosts (memory on cgroup v1), 2 on unified ones, None without memcg."""
        return None if self.memory is None else self.memory.version


@dataclass(frozen=True)
class ContainerCgroup:
    container_id: str
    runtime: str | None  # containerd, cri-o, docker; None for a bare cgroupfs directory name
    path: str


@dataclass(frozen=True)
class PodCgroup:
    pod_uid: str
    qos: QoSClass
    path: str
    containers: tuple[ContainerCgroup, ...]

    def container(self, container_id: str) -> ContainerCgroup:
        """The cgroup of a container, by bare ID or by status form (``containerd://<id>``)."""
        _, bare = parse_container_id(container_id)
        for container in self.containers:
            if container.container_id == bare:
                return container
        raise errors.ContainerCgroupNotFoundError(
            f"pod {self.pod_uid}: no cgroup for container {bare} under {self.path}"
        )


@dataclass(frozen=True)
class ProcessCgroups:
    """Where a process sits: its v2 path and its memory cgroup path (v1 or v2)."""

    pid: int
    unified: str | None
    memory: str | None


def normalize(cgroup_path: str) -> str:
    """A hierarchy-rooted path: leading ``/``, no trailing ``/``, no ``.``/``..``/empty parts."""
    if not cgroup_path.startswith("/"):
        raise errors.InvalidArgumentError(
            "cgroup_path", f"{cgroup_path!r} must start with '/' (rooted at the hierarchy)"
        )
    parts = [part for part in cgroup_path.split("/") if part]
    if any(part in {".", ".."} for part in parts):
        raise errors.InvalidArgumentError(
            "cgroup_path", f"{cgroup_path!r} must not contain . or .."
        )
    return "/" + "/".join(parts)


def validate_pod_uid(pod_uid: str) -> str:
    if not _POD_UID.match(pod_uid):
        raise errors.InvalidArgumentError(
            "pod_uid", f"{pod_uid!r} is not a Kubernetes UID (letters, digits and '-', up to 64)"
        )
    return pod_uid


def kubepods_path(driver: Driver) -> str:
    return "/kubepods.slice" if driver is Driver.SYSTEMD else "/kubepods"


def qos_path(driver: Driver, qos: QoSClass) -> str:
    """The cgroup that holds a QoS class's pods (kubepods itself for Guaranteed)."""
    top = kubepods_path(driver)
    if qos is QoSClass.GUARANTEED:
        return top
    if driver is Driver.SYSTEMD:
        return f"{top}/kubepods-{qos.value}.slice"
    return f"{top}/{qos.value}"


def pod_cgroup_path(driver: Driver, qos: QoSClass, pod_uid: str) -> str:
    """The cgroup path the kubelet gives a pod (pure: no look at the tree)."""
    validate_pod_uid(pod_uid)
    parent = qos_path(driver, qos)
    if driver is Driver.CGROUPFS:
        return f"{parent}/pod{pod_uid}"
    # systemd reserves '-' in unit names for the slice hierarchy: the kubelet escapes it.
    escaped = pod_uid.replace("-", "_")
    if qos is QoSClass.GUARANTEED:
        return f"{parent}/kubepods-pod{escaped}.slice"
    return f"{parent}/kubepods-{qos.value}-pod{escaped}.slice"


def parse_container_id(container_id: str) -> tuple[str | None, str]:
    """Split a status container ID ``<runtime>://<id>`` into (runtime, id); bare IDs pass."""
    runtime, sep, bare = container_id.partition("://")
    if not sep:
        runtime, bare = "", container_id
    if not re.fullmatch(r"[0-9a-f]{12,128}", bare):
        raise errors.InvalidArgumentError(
            "container_id", f"{container_id!r} is not '<runtime>://<hex id>' or a hex id"
        )
    return (runtime or None), bare


def container_of_directory(name: str) -> ContainerCgroup | None:
    """The container a pod's child directory stands for, or None for anything else."""
    match = _CONTAINER_DIR.match(name)
    if match is None:
        return None
    prefix = match["prefix"]
    return ContainerCgroup(
        container_id=match["id"],
        runtime=_RUNTIME_OF_PREFIX[prefix] if prefix else None,
        path=name,  # the caller makes it absolute
    )


def pod_uid_of_directory(driver: Driver, name: str) -> str | None:
    """The pod UID a kubepods child directory stands for, or None for anything else."""
    if driver is Driver.SYSTEMD:
        match = _SYSTEMD_POD.match(name)
        return None if match is None else match["uid"].replace("_", "-")
    match = _CGROUPFS_POD.match(name)
    return None if match is None else match["uid"]


def parse_mountinfo(text: str, sys_root: str | Path = "/sys") -> list[Hierarchy]:
    """The cgroup hierarchies of a mountinfo file, mount points mapped under ``sys_root``.

    v2 controllers are left empty here (they live in the root's ``cgroup.controllers``).
    """
    found: list[Hierarchy] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 6 or len(fields) < separator + 3:
            continue
        fstype = fields[separator + 1]
        if fstype not in {"cgroup", "cgroup2"}:
            continue
        root = _unescape(fields[3])
        mount_point = _under_sys_root(_unescape(fields[4]), Path(sys_root))
        if fstype == "cgroup2":
            found.append(Hierarchy(2, mount_point, root, frozenset()))
        else:
            options = fields[separator + 3].split(",")
            controllers = frozenset(
                option
                for option in options
                if option not in _V1_MOUNT_OPTIONS and "=" not in option
            )
            found.append(Hierarchy(1, mount_point, root, controllers))
    return found


_V1_MOUNT_OPTIONS = frozenset(
    {
        "rw",
        "ro",
        "relatime",
        "noatime",
        "nosuid",
        "nodev",
        "noexec",
        "xattr",
        "clone_children",
        "noprefix",
    }
)


def discover(proc_root: str | Path = "/proc", sys_root: str | Path = "/sys") -> CgroupLayout:
    """Find the hierarchies, the memory controller's hierarchy and the kubelet's driver."""
    mountinfo = Path(proc_root) / "self" / "mountinfo"
    try:
        text = files.read_named(mountinfo)
    except OSError as error:
        raise errors.FactUnavailableError(mountinfo, error.strerror or str(error)) from None
    hierarchies = parse_mountinfo(text, sys_root)
    unified = next((h for h in hierarchies if h.version == 2), None)
    if unified is not None:
        controllers_file = unified.mount_point / "cgroup.controllers"
        try:
            controllers = frozenset(files.read_text(controllers_file).split())
        except OSError as error:
            raise errors.FactUnavailableError(
                controllers_file, error.strerror or str(error)
            ) from None
        unified = Hierarchy(2, unified.mount_point, unified.mount_root, controllers)
    memory: Hierarchy | None
    if unified is not None and "memory" in unified.controllers:
        memory = unified
    else:
        memory = next(
            (h for h in hierarchies if h.version == 1 and "memory" in h.controllers), None
        )
    if unified is None and memory is None:
        raise errors.CgroupLayoutUnknownError(
            f"{mountinfo}: no cgroup2 mount and no cgroup v1 mount with the memory controller"
        )
    driver: Driver | None = None
    pods: Hierarchy | None = None
    for hierarchy in (memory, unified):
        if hierarchy is None:
            continue
        for candidate in (Driver.SYSTEMD, Driver.CGROUPFS):
            if _is_dir(hierarchy, kubepods_path(candidate)):
                driver, pods = candidate, hierarchy
                break
        if driver is not None:
            break
    return CgroupLayout(unified=unified, memory=memory, driver=driver, pods=pods)


def find_pod(layout: CgroupLayout, pod_uid: str, qos: QoSClass | None = None) -> PodCgroup:
    """A pod's cgroup and its containers; all QoS classes are tried when ``qos`` is None."""
    validate_pod_uid(pod_uid)
    driver, hierarchy = _kubepods(layout)
    classes = (qos,) if qos is not None else tuple(QoSClass)
    looked_at: list[str] = []
    for candidate in classes:
        path = pod_cgroup_path(driver, candidate, pod_uid)
        looked_at.append(path)
        if _is_dir(hierarchy, path):
            return PodCgroup(pod_uid, candidate, path, _containers(hierarchy, path))
    raise errors.PodCgroupNotFoundError(pod_uid, looked_at)


def list_pods(layout: CgroupLayout) -> list[PodCgroup]:
    """Every pod cgroup on the node, in QoS order then by path."""
    driver, hierarchy = _kubepods(layout)
    pods: list[PodCgroup] = []
    for qos in QoSClass:
        parent = qos_path(driver, qos)
        for name in _child_names(hierarchy, parent):
            uid = pod_uid_of_directory(driver, name)
            if uid is None:
                continue
            path = f"{parent}/{name}"
            # Under systemd a Guaranteed pod's name has no QoS part; others carry theirs.
            if driver is Driver.SYSTEMD and pod_cgroup_path(driver, qos, uid) != path:
                continue
            pods.append(PodCgroup(uid, qos, path, _containers(hierarchy, path)))
    return pods


def pids(layout: CgroupLayout, cgroup_path: str, recursive: bool = True) -> tuple[int, ...]:
    """Processes in a cgroup (and, by default, in all its descendants), sorted."""
    hierarchy = _holding(layout, cgroup_path)
    top = hierarchy.directory(cgroup_path)
    found: set[int] = set()
    directories = _walk(top) if recursive else iter([top])
    for directory in directories:
        procs = directory / "cgroup.procs"
        try:
            text = _read_cgroup_file(procs)
        except FileNotFoundError:
            if directory == top:
                raise errors.CgroupNotFoundError(f"cgroup {cgroup_path}: {procs} missing") from None
            continue  # a child cgroup removed while we walked
        for number, line in enumerate(text.split(), start=1):
            if not files.is_count(line):
                raise errors.MalformedFileError(procs, f"entry {number} is not a pid: {line!r}")
            found.add(int(line))
    return tuple(sorted(found))


def memcg_path(layout: CgroupLayout, cgroup_path: str) -> str:
    """The value for a DAMOS memcg filter's ``memcg_path`` file, checked to exist."""
    memory = _memory(layout)
    path = normalize(cgroup_path)
    if not memory.directory(path).is_dir():
        raise errors.CgroupNotFoundError(
            f"cgroup {path}: not on the memory hierarchy ({memory.directory(path)})"
        )
    return path


def memcg_paths_below(layout: CgroupLayout, cgroup_path: str) -> tuple[str, ...]:
    """A cgroup's memory cgroup and every one below it, as DAMOS memcg filters take them.

    A memcg filter matches a page's memcg exactly, so what a cgroup's processes hold is
    spread over its own memcg and its descendants'.
    """
    memory = _memory(layout)
    top = memcg_path(layout, cgroup_path)
    mount = memory.directory(memory.mount_root)
    found = []
    for directory in _walk(memory.directory(top)):
        relative = directory.relative_to(mount)
        found.append(normalize(str(PurePosixPath(memory.mount_root) / relative)))
    return tuple(found)


def memory_usage_bytes(layout: CgroupLayout, cgroup_path: str) -> int:
    """Memory charged to a cgroup: ``memory.current`` (v2) or ``memory.usage_in_bytes`` (v1)."""
    memory = _memory(layout)
    name = "memory.current" if memory.version == 2 else "memory.usage_in_bytes"
    path = memory.directory(cgroup_path) / name
    try:
        text = _read_cgroup_file(path).strip()
    except FileNotFoundError:
        raise errors.CgroupNotFoundError(f"cgroup {cgroup_path}: {path} missing") from None
    if not files.is_count(text):
        raise errors.MalformedFileError(path, f"not a byte count: {text!r}")
    return int(text)


def memory_swap_bytes(layout: CgroupLayout, cgroup_path: str) -> int | None:
    """Swap used by a cgroup: ``memory.swap.current`` (cgroup v2); None where the node does
    not account swap per cgroup (cgroup v1, or v2 without swap accounting)."""
    memory = _memory(layout)
    if memory.version != 2:
        return None
    directory = memory.directory(cgroup_path)
    path = directory / "memory.swap.current"
    try:
        text = _read_cgroup_file(path).strip()
    except FileNotFoundError:
        if not directory.is_dir():
            raise errors.CgroupNotFoundError(f"cgroup {cgroup_path}: {directory} missing") from None
        return None
    if not files.is_count(text):
        raise errors.MalformedFileError(path, f"not a byte count: {text!r}")
    return int(text)


# What ``memory_protection_bytes`` returns for ``max``: all of the cgroup's memory.
PROTECTION_MAX = 2**63 - 1
ProtectionFile = Literal["memory.low", "memory.min"]


def memory_protection_bytes(layout: CgroupLayout, cgroup_path: str, name: ProtectionFile) -> int:
    """A cgroup's memory protection, ``memory.low`` or ``memory.min`` (cgroup v2 only):
    bytes the kernel's own reclaim leaves it (``max``: ``PROTECTION_MAX``).

    Raises ``FactUnavailableError`` where memory is on cgroup v1, which has neither file.
    """
    memory = _memory(layout)
    directory = memory.directory(cgroup_path)
    path = directory / name
    if memory.version != 2:
        raise errors.FactUnavailableError(path, f"cgroup v1 has no {name} (cgroup v2 only)")
    try:
        text = _read_cgroup_file(path).strip()
    except FileNotFoundError:
        if not directory.is_dir():
            raise errors.CgroupNotFoundError(f"cgroup {cgroup_path}: {directory} missing") from None
        raise errors.FactUnavailableError(path, "missing") from None
    if text == "max":
        return PROTECTION_MAX
    if not text.isdigit():
        raise errors.MalformedFileError(path, f"not a byte count or 'max': {text!r}")
    return min(int(text), PROTECTION_MAX)


def memory_stat(layout: CgroupLayout, cgroup_path: str) -> dict[str, int]:
    """A cgroup's ``memory.stat`` as name -> value (v2 names, or v1's where memory is v1)."""
    memory = _memory(layout)
    path = memory.directory(cgroup_path) / "memory.stat"
    try:
        text = _read_cgroup_file(path)
    except FileNotFoundError:
        raise errors.CgroupNotFoundError(f"cgroup {cgroup_path}: {path} missing") from None
    return _flat_keyed(path, text)


def _flat_keyed(path: Path, text: str) -> dict[str, int]:
    """A flat keyed cgroup file (``memory.stat``, ``cgroup.stat``) as name -> count."""
    values: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        name, _, value = line.partition(" ")
        if not line.strip():
            continue
        if not files.is_count(value.strip()):
            raise errors.MalformedFileError(path, f"line {number} is not 'name value': {line!r}")
        values[name] = int(value)
    return values


def refaults(stat: dict[str, int]) -> int | None:
    """Pages refaulted after reclaim, from ``memory_stat``: ``workingset_refault_anon`` +
    ``_file`` (5.9+), or ``workingset_refault`` (before); None where not counted (v1)."""
    split = [stat[n] for n in ("workingset_refault_anon", "workingset_refault_file") if n in stat]
    if split:
        return sum(split)
    return stat.get("workingset_refault")


def process_cgroups(
    layout: CgroupLayout, pid: int, proc_root: str | Path = "/proc"
) -> ProcessCgroups:
    """The cgroups of a process, from ``/proc/PID/cgroup``."""
    path = Path(proc_root) / str(pid) / "cgroup"
    try:
        text = files.read_named(path)
    except (FileNotFoundError, ProcessLookupError):
        raise errors.ProcessGoneError(pid) from None
    unified: str | None = None
    memory: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        hierarchy_id, sep1, rest = line.partition(":")
        controllers, sep2, cgroup_path = rest.partition(":")
        if not (sep1 and sep2 and files.is_count(hierarchy_id)):
            raise errors.MalformedFileError(
                path, f"line {number} is not 'id:controllers:path': {line!r}"
            )
        if hierarchy_id == "0" and controllers == "":
            unified = cgroup_path
        elif "memory" in controllers.split(","):
            memory = cgroup_path
    if layout.memory is not None and layout.memory.version == 2:
        memory = unified
    return ProcessCgroups(pid=pid, unified=unified, memory=memory)


def _kubepods(layout: CgroupLayout) -> tuple[Driver, Hierarchy]:
    if layout.driver is None or layout.pods is None:
        raise errors.KubepodsNotFoundError(
            "no kubepods.slice (systemd driver) or kubepods (cgroupfs driver) cgroup on this node"
        )
    return layout.driver, layout.pods


def _memory(layout: CgroupLayout) -> Hierarchy:
    if layout.memory is None:
        raise errors.CgroupLayoutUnknownError(
            "this node has no hierarchy with the memory controller"
        )
    return layout.memory


def _holding(layout: CgroupLayout, cgroup_path: str) -> Hierarchy:
    """The hierarchy a cgroup is looked for on: memory first (what DAMON filters on)."""
    candidates = [h for h in (layout.memory, layout.unified) if h is not None]
    if len(candidates) == 2 and candidates[0] is candidates[1]:
        candidates = candidates[:1]  # cgroup v2 with memory: one hierarchy
    for hierarchy in candidates:
        if _is_dir(hierarchy, cgroup_path):
            return hierarchy
    where = ", ".join(str(h.directory(cgroup_path)) for h in candidates if h.contains(cgroup_path))
    raise errors.CgroupNotFoundError(f"cgroup {cgroup_path}: no such directory ({where})")


def _containers(hierarchy: Hierarchy, pod_path: str) -> tuple[ContainerCgroup, ...]:
    containers = []
    for name in _child_names(hierarchy, pod_path):
        container = container_of_directory(name)
        if container is not None:
            containers.append(
                ContainerCgroup(container.container_id, container.runtime, f"{pod_path}/{name}")
            )
    return tuple(containers)


def _read_cgroup_file(path: Path) -> str:
    """A cgroup file's text. A cgroup being removed (kubelet deleting a pod) may still
    list its files but answer ENODEV to reading one: that is a missing file too."""
    try:
        return files.read_text(path)
    except OSError as err:
        if err.errno == errno.ENODEV:
            raise FileNotFoundError(errno.ENOENT, "its cgroup is being removed", str(path)) from err
        raise


def _child_names(hierarchy: Hierarchy, cgroup_path: str) -> list[str]:
    directory = hierarchy.directory(cgroup_path)
    try:
        return sorted(entry.name for entry in directory.iterdir() if entry.is_dir())
    except FileNotFoundError:
        return []


def _is_dir(hierarchy: Hierarchy, cgroup_path: str) -> bool:
    # Outside a mount of a subtree (cgroup namespace) a cgroup is not visible: not an error.
    return hierarchy.contains(cgroup_path) and hierarchy.directory(cgroup_path).is_dir()


def _walk(top: Path) -> Iterator[Path]:
    yield top
    try:
        children = sorted(entry for entry in top.iterdir() if entry.is_dir())
    except FileNotFoundError:
        return
    for child in children:
        yield from _walk(child)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def _under_sys_root(mount_point: str, sys_root: Path) -> Path:
    point = PurePosixPath(mount_point)
    root = PurePosixPath(str(sys_root))
    if point == root or root in point.parents:
        return Path(mount_point)
    sys = PurePosixPath("/sys")
    if sys in point.parents:
        return sys_root / point.relative_to(sys)
    return Path(mount_point)


def dying_descendants(layout: CgroupLayout) -> int:
    """Removed cgroups the kernel still keeps below the visible cgroup v2 root
    (``nr_dying_descendants`` of its ``cgroup.stat``).

    A cgroup lingers there while something holds a reference to it; DAMON memcg filters
    did so on kernels without upstream commit d4e7b5c4 (docs/pod-selection.md), so on
    those a node that churns pods under pod-targeted paddr schemes sees it grow.
    Raises ``errors.FactUnavailableError`` without a cgroup v2 hierarchy.
    """
    if layout.unified is None:
        raise errors.FactUnavailableError("cgroup.stat", "no cgroup v2 hierarchy")
    path = layout.unified.mount_point / "cgroup.stat"
    try:
        text = _read_cgroup_file(path)
    except FileNotFoundError:
        raise errors.FactUnavailableError(path, "missing") from None
    dying = _flat_keyed(path, text).get("nr_dying_descendants")
    if dying is None:
        raise errors.MalformedFileError(path, "no nr_dying_descendants line")
    return dying
