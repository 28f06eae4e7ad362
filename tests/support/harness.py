"""Boot a small, realistic Kubernetes-node-like Linux in QEMU and run one script in it.

The guest (see docs/testbed.md and scripts/vm-assets.sh):

- one of Debian's cloud kernels of the matrix (6.1, 6.12 by default, 6.18, 7.3; see
  scripts/vm-assets.sh) under QEMU's software emulation, booted so that the emulated
  MMU sets accessed bits as hardware does (``VmConfig.faithful_accessed_bits``);
- two NUMA nodes, node 1 without CPUs (how CXL memory appears) and, through HMAT
  latencies and bandwidths, in a lower memory tier;
- the host's root file system, read-only through one virtiofsd, is the guest's userland:
  the busybox /init chroots into it, so the guest runs the project's own virtualenv at
  the same path as on the host;
- a second virtiofsd exports a fresh host directory (the "share", /tmp/share in the
  guest) that carries the script in and the results out;
- zram swap from the kernel package's modules, cgroup v2 at /sys/fs/cgroup.

One boot runs one script. The guest's /init runs it under a deadline and powers off
afterwards, whatever happens; on the host, ``boot`` waits for QEMU with a deadline of
its own and, in all cases (failure, timeout, KeyboardInterrupt), kills QEMU and both
virtiofsd by their process ids. The children also die with the test process (started
through ``setpriv --pdeathsig KILL``), so nothing outlives a killed pytest. Boots of
concurrent processes are serialised by a lock file: two emulated guests on two cores
would only slow each other.

A guest that dies before its script starts (rare: an early-boot oops under
multi-threaded TCG) is booted once more, since nothing of the test ran yet.

A boot costs 5-15 s of emulated kernel start plus the work, so callers batch several
checks into one guest script. ``tests/vm/guest_lib.py`` is copied into every share,
beside the guest script, so guest scripts can ``import guest_lib`` for workloads, cgroups
and NUMA queries; ``tests/vm/scenarios/<name>.py`` are the guest scripts of
``Runner.scenario``.

Exceptions::

    VmError
     ├── VmAssetsMissingError   the cached kernel/initramfs are absent (run scripts/vm-assets.sh)
     ├── VmBootError      QEMU or virtiofsd did not start, or the guest never ran the script
     ├── VmTimeoutError         the guest outlived its deadline and was killed
     └── GuestFailedError       the guest script exited non-zero (carries the run for its output)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_LIB = REPO_ROOT / "tests" / "vm" / "guest_lib.py"
SCENARIOS = REPO_ROOT / "tests" / "vm" / "scenarios"
VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
QEMU = "qemu-system-x86_64"
BOOT_LOCK = Path("/run/lock/damon-k8s-vm.lock")
# How long a boot waits for another to finish: the longest any boot may hold the lock
# (a kernel suite's guest: 1200 s of its own deadline plus the host's margin), so a boot
# queued behind a whole kernel suite waits it out instead of failing.
LONGEST_HOLD_S = 1500.0
SHARE_IN_GUEST = "/tmp/share"


class VmError(Exception):
    """Base of the harness's errors."""


class VmAssetsMissingError(VmError):
    """The kernel, modules or initramfs are not in the cache."""


class VmBootError(VmError):
    """QEMU or virtiofsd failed, or the guest did not reach the script."""

    def __init__(self, message: str, *, before_script: bool = False) -> None:
        super().__init__(message)
        self.before_script = before_script  # the guest died before the script started


class VmTimeoutError(VmError):
    """The guest exceeded its deadline and was killed."""

    def __init__(self, message: str, run_dir: Path) -> None:
        super().__init__(message)
        self.run_dir = run_dir


class GuestFailedError(VmError):
    """The guest script exited with a non-zero status."""

    def __init__(self, message: str, run: GuestRun) -> None:
        super().__init__(message)
        self.run = run


def cache_dir() -> Path:
    return Path(os.environ.get("DAMON_K8S_CACHE", str(Path.home() / ".cache" / "damon-k8s")))


@dataclass(frozen=True)
class VmAssets:
    """The files scripts/vm-assets.sh leaves in the cache."""

    release: str
    kernel: Path
    initramfs: Path
    modules: Path

    @classmethod
    def from_cache(cls, cache: Path | None = None, series: str | None = None) -> VmAssets:
        """The cached assets of kernel ``series`` (``"6.18"``), or of the default kernel."""
        vm = (cache or cache_dir()) / "vm"
        current = vm / "series" / series if series else vm / "current"
        hint = "run scripts/vm-assets.sh (or `make test`, which calls it) to fetch and build them"
        if not current.is_file():
            raise VmAssetsMissingError(f"no VM assets in {vm} ({current} missing): {hint}")
        release = current.read_text().strip()
        assets = cls(
            release=release,
            kernel=vm / "kernel" / release / "vmlinuz",
            initramfs=vm / "initramfs.cpio.gz",
            modules=vm / "modules",
        )
        for path in (assets.kernel, assets.initramfs, assets.modules / "lib/modules" / release):
            if not path.exists():
                raise VmAssetsMissingError(f"VM asset {path} missing: {hint}")
        for tool in (QEMU, str(VIRTIOFSD)):
            if shutil.which(tool) is None:
                raise VmAssetsMissingError(f"{tool} not found (qemu-system-x86): {hint}")
        return assets


@dataclass(frozen=True)
class VmConfig:
    """Shape of the guest. Node sizes in MiB; node 0 holds the CPUs, every other node is
    CPU-less and CXL-like (with ``hmat``, slower and narrower: a lower memory tier)."""

    node_mib: tuple[int, ...] = (1024, 1024)
    cpus: int = 2
    zram: str = "512M"  # "0" for no swap
    hmat: bool = True
    net: bool = False
    deadline_s: float = 240.0
    # Time the host grants beyond the guest's own deadline (kernel boot under emulation,
    # mounts, zram, power-off) before it kills QEMU.
    margin_s: float = 120.0
    extra_cmdline: tuple[str, ...] = ()
    # QEMU's software TLB keeps a translation far longer than a hardware TLB, so a page
    # whose accessed bit DAMON cleared is walked again (and the bit set again) only after
    # a flush: hot sets go unseen. With page-table isolation forced on and PCIDs off,
    # every kernel entry and exit (each timer tick, each syscall) reloads CR3, which
    # flushes the emulated TLB, as context switches and capacity do on hardware.
    # tests/vm/test_calibration.py measures the difference.
    faithful_accessed_bits: bool = True
    # Multi-threaded TCG runs each vCPU on its own host thread, twice the speed of one
    # thread for all on this 2-core host. The kernel patches its own text at run time
    # (static keys, tracepoints) and, rarely, another vCPU then trips over a stale int3
    # ("Oops: int3"). The guest's /init flips the keys seen so at boot (scripts/vm-assets.sh),
    # and the kernel suites and the deployed walk boot again on such a death; one thread
    # (free of the race) made them miss their deadlines.
    single_threaded_tcg: bool = False
    # Host disk images attached as virtio block devices, in order (/dev/vda, /dev/vdb, ...
    # once the guest loads virtio_blk from the kernel's modules): qcow2 by their .qcow2
    # suffix, raw otherwise. A VM node keeps containerd's images on one (vm_node).
    disks: tuple[Path, ...] = ()

    @property
    def host_deadline_s(self) -> float:
        return max(1.0, self.deadline_s + self.margin_s)

    def __post_init__(self) -> None:
        if min(self.node_mib) < 256:
            raise ValueError(f"node_mib: each node needs at least 256 MiB, got {self.node_mib}")
        if self.cpus < 1:
            raise ValueError(f"cpus: at least 1, got {self.cpus}")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s: must be positive, got {self.deadline_s}")


def died_of_int3(console: str) -> bool:
    """Whether a guest's console shows its kernel killed by the emulator's int3 race
    (``VmConfig.single_threaded_tcg`` says what that is)."""
    return "Oops: int3" in console


@dataclass(frozen=True)
class GuestRun:
    """What one boot brought back."""

    rc: int | None
    stdout: str
    stderr: str
    console: str
    share: Path
    wall_s: float
    guest_boot_s: float | None  # guest uptime when the script started
    guest_run_s: float | None  # guest uptime from script start to end

    def path(self, name: str) -> Path:
        return self.share / name

    def text(self, name: str) -> str:
        return self.path(name).read_text()

    def json(self, name: str = "result.json") -> Any:
        path = self.path(name)
        if not path.is_file():
            raise GuestFailedError(f"the guest wrote no {name}\n{self.describe()}", self)
        return json.loads(path.read_text())

    def describe(self, tail: int = 3000) -> str:
        return (
            f"rc={self.rc} wall={self.wall_s:.1f}s boot={self.guest_boot_s}s "
            f"run={self.guest_run_s}s\n"
            f"--- stdout (tail) ---\n{self.stdout[-tail:]}\n"
            f"--- stderr (tail) ---\n{self.stderr[-tail:]}\n"
            f"--- console (tail) ---\n{self.console[-tail:]}"
        )

    def check(self) -> GuestRun:
        if self.rc != 0:
            raise GuestFailedError(f"guest script failed\n{self.describe()}", self)
        return self


def _dying_with_us(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel kills it when the test process dies (SIGKILL too)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *argv] if setpriv else argv


class _Children:
    """Processes started for one boot; all killed (by process group id) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                _dying_with_us(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def _exclusive_boot(timeout_s: float) -> Iterator[None]:
    BOOT_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with BOOT_LOCK.open("w") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise VmBootError(
                        f"another process held {BOOT_LOCK} (a VM boot) for {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while not path.exists():
        if proc.poll() is not None:
            raise VmBootError(f"virtiofsd exited ({proc.returncode}): {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise VmBootError(f"virtiofsd did not create {path} within 15 s")
        time.sleep(0.05)


def processes_using(path: Path) -> list[int]:
    """Pids whose command line mentions ``path`` (a boot's run directory is unique)."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # exited while we looked
    return found


def _guest_python() -> Path:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def _paths_under_host_tmp(paths: list[Path]) -> list[str]:
    """Host paths the guest needs that its own /tmp tmpfs would hide."""
    kept: list[str] = []
    for path in paths:
        text = str(path)
        if text.startswith("/tmp/") and not any(text.startswith(k + "/") for k in kept):
            kept.append(text)
    return kept


# The emulator's CPU without AVX2. QEMU 7.2's emulated AVX2 faults where hardware does not:
# numpy's AVX2 sort of a uint64 array that ends at the end of a mapping dies of SIGSEGV
# in the guest (2999 of 2999 such arrays sort on the host's AVX2, the first one kills the
# guest's process; with numpy's AVX2 paths off all 2999 sort there). The userspace backend's
# migrate_pages (np.unique, which sorts) died so in three CI runs. Without AVX2 every guest
# program takes its SSE4.2 paths (numpy's baseline), as on hardware of that generation.
GUEST_CPU = "max,-avx2"


def _qemu_argv(assets: VmAssets, config: VmConfig, run_dir: Path, cmdline: str) -> list[str]:
    machine = "pc,hmat=on" if config.hmat else "pc"
    argv = [
        QEMU,
        "-machine", machine,
        "-accel", f"tcg,thread={'single' if config.single_threaded_tcg else 'multi'}",
        "-cpu", GUEST_CPU,
        "-smp", str(config.cpus),
        "-m", f"{sum(config.node_mib)}M",
    ]  # fmt: skip
    for node, mib in enumerate(config.node_mib):
        argv += ["-object", f"memory-backend-memfd,id=m{node},size={mib}M,share=on"]
    for node in range(len(config.node_mib)):
        where = f"cpus=0-{config.cpus - 1}" if node == 0 else "initiator=0" if config.hmat else ""
        argv += ["-numa", ",".join(filter(None, (f"node,nodeid={node}", where, f"memdev=m{node}")))]
    if config.hmat:
        # DRAM-like node 0 and slower, narrower CXL-like nodes after it: the guest's
        # memory tiering then puts those in a lower tier.
        for target in range(len(config.node_mib)):
            latency, bandwidth = (10, "10G") if target == 0 else (40, "2G")
            common = f"hmat-lb,initiator=0,target={target},hierarchy=memory"
            argv += ["-numa", f"{common},data-type=access-latency,latency={latency}"]
            argv += ["-numa", f"{common},data-type=access-bandwidth,bandwidth={bandwidth}"]
    argv += [
        "-chardev", f"socket,id=vfs0,path={run_dir / 'hostroot.sock'}",
        "-device", "vhost-user-fs-pci,chardev=vfs0,tag=hostroot",
        "-chardev", f"socket,id=vfs1,path={run_dir / 'share.sock'}",
        "-device", "vhost-user-fs-pci,chardev=vfs1,tag=share",
        "-kernel", str(assets.kernel),
        "-initrd", str(assets.initramfs),
        "-append", cmdline,
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{run_dir / 'console.log'}",
        "-no-reboot",
    ]  # fmt: skip
    if config.net:
        argv += ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
    else:
        argv += ["-nic", "none"]
    for disk in config.disks:
        image_format = "qcow2" if disk.suffix == ".qcow2" else "raw"
        argv += ["-drive", f"file={disk},if=virtio,format={image_format}"]
    return argv


_UPTIME = re.compile(r"damonvm: (run|done)[^\n]*?([0-9]+\.[0-9]+) [0-9]+\.[0-9]+\s*$", re.M)


def _uptimes(console: str) -> tuple[float | None, float | None]:
    marks = {m.group(1): float(m.group(2)) for m in _UPTIME.finditer(console)}
    run = marks.get("run")
    done = marks.get("done")
    return run, (done - run) if run is not None and done is not None else None


# A guest that dies before its /init reaches the script (seen: an int3 oops while the
# kernel patches its own text early in boot under multi-threaded TCG) is booted again, up
# to this many attempts in all; nothing of the test ran, so a retry changes no result.
# So is one whose kernel the same race killed mid-script, when the caller says the script
# may run again from its start (``again_if_oopsed``: it leaves nothing outside its share).
BOOT_ATTEMPTS = 2


def boot(
    script: str,
    *,
    config: VmConfig | None = None,
    files: Mapping[str, str | bytes | Path] | None = None,
    assets: VmAssets | None = None,
    work_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    host_paths: Sequence[Path] = (),
    again_if_oopsed: bool = False,
) -> GuestRun:
    """Boot the guest, run ``script`` (a shell script) chrooted into the host root, return.

    ``files`` are written into the share first (names relative to it); the script runs
    with the share as its working directory and ``$PY`` naming the project's Python.
    ``host_paths`` are host directories the script reads where they are: any under /tmp stays
    visible above the guest's own /tmp (the checkout, the venv and the kernel's modules
    always do). The returned run's ``rc`` is the script's exit status (``None`` if it
    never ended); files the script left in the share are under ``run.share``.
    """
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        try:
            run = _boot_once(
                script,
                config=config,
                files=files,
                assets=assets,
                work_dir=work_dir,
                env=env,
                host_paths=host_paths,
            )
        except VmBootError as error:
            if not error.before_script or attempt == BOOT_ATTEMPTS:
                raise
            continue
        if (
            again_if_oopsed
            and attempt < BOOT_ATTEMPTS
            and run.rc is None
            and died_of_int3(run.console)
        ):
            sys.stderr.write(
                f"\nthe guest oopsed on int3 (TCG's race) in {run.share.parent}; again\n"
            )
            continue
        return run
    raise AssertionError("unreachable")


def _boot_once(
    script: str,
    *,
    config: VmConfig | None = None,
    files: Mapping[str, str | bytes | Path] | None = None,
    assets: VmAssets | None = None,
    work_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    host_paths: Sequence[Path] = (),
) -> GuestRun:
    config = config or VmConfig()
    assets = assets or VmAssets.from_cache()
    run_dir = Path(tempfile.mkdtemp(prefix="damon-vm-", dir=work_dir))
    share = run_dir / "share"
    share.mkdir()
    shutil.copy(GUEST_LIB, share / GUEST_LIB.name)
    for name, content in (files or {}).items():
        dest = share / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, dest)
        elif isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            dest.write_text(content)
    python = _guest_python()
    needed = [REPO_ROOT, python.parent.parent, Path(sys.base_prefix), assets.modules, *host_paths]
    (share / "keep-tmp-paths").write_text("\n".join(_paths_under_host_tmp(needed)) + "\n")
    exports = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PY": str(python),
        "REPO": str(REPO_ROOT),
        # The guest imports the checkout it runs from, even where the venv's editable
        # install points at another one (a worktree, a clone tested with a shared venv).
        "PYTHONPATH": f"{REPO_ROOT / 'agent'}:{REPO_ROOT / 'operator'}",
        "SHARE": SHARE_IN_GUEST,
        **(env or {}),
    }
    header = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items())
    (share / "guest.sh").write_text(f"{header}{script}\n")
    cmdline = " ".join(
        [
            "console=ttyS0",
            "panic=-1",
            "quiet",
            "loglevel=4",
            f"damonvm.deadline={int(config.deadline_s)}",
            f"damonvm.moddir={assets.modules}",
            f"damonvm.zram={config.zram}",
            f"damonvm.net={int(config.net)}",
            *(("pti=on", "nopcid") if config.faithful_accessed_bits else ()),
            *config.extra_cmdline,
        ]
    )
    children = _Children()
    started = time.monotonic()
    rc: int | None = None
    with _exclusive_boot(timeout_s=max(LONGEST_HOLD_S, config.host_deadline_s + config.margin_s)):
        try:
            for tag, source, cache in (("hostroot", Path("/"), "always"), ("share", share, "none")):
                sock = run_dir / f"{tag}.sock"
                log = run_dir / f"virtiofsd-{tag}.log"
                proc = children.start(
                    [
                        str(VIRTIOFSD),
                        f"--socket-path={sock}",
                        "-o",
                        f"source={source}",
                        "-o",
                        f"cache={cache}",
                        "-o",
                        "sandbox=chroot",
                    ],
                    log,
                )
                _wait_for_socket(sock, proc, log)
            started = time.monotonic()
            qemu = children.start(
                _qemu_argv(assets, config, run_dir, cmdline), run_dir / "qemu.log"
            )
            try:
                qemu.wait(timeout=config.host_deadline_s)
            except subprocess.TimeoutExpired:
                children.kill_all()
                raise VmTimeoutError(
                    f"guest still running after {config.host_deadline_s:.0f} s; "
                    f"killed\n{_read(run_dir / 'console.log')[-3000:]}",
                    run_dir,
                ) from None
            if qemu.returncode != 0:
                raise VmBootError(
                    f"qemu exited {qemu.returncode}: {_read(run_dir / 'qemu.log')[-3000:]}\n"
                    f"{_read(run_dir / 'console.log')[-3000:]}"
                )
        finally:
            children.kill_all()
            for sock in run_dir.glob("*.sock"):
                sock.unlink(missing_ok=True)
    wall = time.monotonic() - started
    console = _read(run_dir / "console.log")
    rc_text = _read(share / "rc").strip()
    if rc_text:
        rc = int(rc_text)
    boot_s, run_s = _uptimes(console)
    if boot_s is None:
        raise VmBootError(
            f"the guest never started the script\n{console[-4000:]}", before_script=True
        )
    return GuestRun(
        rc=rc,
        stdout=_read(share / "stdout"),
        stderr=_read(share / "stderr"),
        console=console,
        share=share,
        wall_s=wall,
        guest_boot_s=boot_s,
        guest_run_s=run_s,
    )


# Figures the scenarios observed, by test or module id; tests/vm/conftest.py prints them.
FIGURES: dict[str, dict[str, Any]] = {}


class Figures:
    """Named figures of one test (or of one module's shared boot)."""

    def __init__(self, key: str) -> None:
        self._figures = FIGURES.setdefault(key, {})

    def record(self, **figures: Any) -> None:
        self._figures.update(figures)

    def record_run(self, run: GuestRun) -> None:
        self.record(
            wall_s=round(run.wall_s, 1),
            guest_boot_s=run.guest_boot_s,
            guest_run_s=None if run.guest_run_s is None else round(run.guest_run_s, 1),
        )


def boot_python(
    main: str,
    *,
    config: VmConfig | None = None,
    files: Mapping[str, str | bytes | Path] | None = None,
    assets: VmAssets | None = None,
    work_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    again_if_oopsed: bool = False,
) -> GuestRun:
    """Boot and run ``main`` (Python source) with the project's Python in the guest."""
    merged: dict[str, str | bytes | Path] = dict(files or {})
    merged["main.py"] = main
    return boot(
        '"$PY" main.py',
        config=config,
        files=merged,
        assets=assets,
        work_dir=work_dir,
        env=env,
        again_if_oopsed=again_if_oopsed,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class Runner:
    """Boots bound to one set of assets and a work directory (what the pytest fixture gives)."""

    def __init__(self, assets: VmAssets, work_dir: Path) -> None:
        self.assets = assets
        self.work_dir = work_dir

    def python(
        self,
        main: str,
        *,
        config: VmConfig | None = None,
        files: Mapping[str, str | bytes | Path] | None = None,
        check: bool = True,
    ) -> GuestRun:
        # A test's guest keeps what it makes in its share: on TCG's int3 race it runs again.
        run = boot_python(
            main,
            config=config,
            files=files,
            assets=self.assets,
            work_dir=self.work_dir,
            again_if_oopsed=True,
        )
        return run.check() if check else run

    def scenario(
        self, name: str, params: Mapping[str, Any] | None = None, *, config: VmConfig | None = None
    ) -> GuestRun:
        """Run ``scenarios/<name>.py`` in the guest with ``params`` as its params.json."""
        main = (SCENARIOS / f"{name}.py").read_text()
        return self.python(main, config=config, files={"params.json": json.dumps(params or {})})

    def shell(self, script: str, *, config: VmConfig | None = None, check: bool = True) -> GuestRun:
        run = boot(
            script, config=config, assets=self.assets, work_dir=self.work_dir, again_if_oopsed=True
        )
        return run.check() if check else run
