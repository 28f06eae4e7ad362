"""File access to the DAMON sysfs admin directory, behind one small interface.

``SysfsIO`` is all the driver needs: read a file, write a file, list a directory, test a
path; paths are relative to the admin directory (``/sys/kernel/mm/damon/admin``), which is
injected, so tests point the driver at a fake tree (``fake.FakeDamonSysfs``) and real
tests at the host.

``HostSysfs`` maps ``OSError`` to the typed errors of ``errors`` by errno, naming the file
and the value. It uses ``os.open``/``os.read`` directly: a snapshot reads three small files
per region, up to a few thousand a second, and the buffered ``open()`` path costs several
times more CPU per file.

The snapshot's hot path has one more method, outside ``SysfsIO``: ``NumberedTableReader``
(``HostSysfs`` has it; readers check for it and otherwise take the generic path of
``listdir`` + ``read_table`` + ``read``). ``read_numbered_table`` lists a directory's
numbered subdirectories, reads integer files in each and the directory's own files, all
through one directory descriptor, parsing bytes straight to ``int``. Measured on 6.18
(``bench/agent_overhead.py --reader old|new``), most of a snapshot's cost is the kernel
instantiating a dentry and inode for every file of the region directories it re-creates
on each update, which no reader avoids; what this path removes is the Python and
path-walk overhead around each of those opens. ``GenericSysfs`` is ``HostSysfs`` without
that method: the reference behaviour for tests and the benchmark's baseline.
"""

from __future__ import annotations

import errno as errno_codes
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from damon_agent.ops.kernel import errors

DEFAULT_ADMIN: Final = Path("/sys/kernel/mm/damon/admin")
_PAGE: Final = 4096
_READ_BUSY_RETRIES: Final = 10
_READ_BUSY_BACKOFF_S: Final = 0.002
# Every integer attribute of a tried region fits (20 digits and a newline); a value that
# fills the buffer is read on to its end. A small buffer spares allocating a page per read.
_INT_BUFFER: Final = 32


class SysfsIO(Protocol):
    @property
    def root(self) -> Path: ...

    def read(self, path: str) -> str:
        """The file's content without the trailing newline."""
        ...

    def write(self, path: str, value: str) -> None: ...

    def listdir(self, path: str) -> list[str]: ...

    def exists(self, path: str) -> bool: ...

    def read_table(self, path: str, entries: list[str], files: tuple[str, ...]) -> list[list[str]]:
        """For each of ``files``, its content in every ``path/<entry>/`` directory."""
        ...


@dataclass(frozen=True)
class NumberedTable:
    """Integer files of a directory's numbered subdirectories, in numeric order.

    ``names`` are the subdirectories (``"0"``, ``"2"``, ...); ``columns[i][j]`` is file
    ``i`` of subdirectory ``names[j]``; ``own[name]`` is a file of the directory itself,
    ``None`` when the kernel does not have it.
    """

    names: list[str]
    columns: list[list[int]]
    own: dict[str, int | None]


@runtime_checkable
class NumberedTableReader(Protocol):
    def read_numbered_table(
        self, path: str, files: tuple[str, ...], own_files: tuple[str, ...] = ()
    ) -> NumberedTable:
        """Every ``path/<number>/<file>`` of ``files``, and ``path/<own file>``, as ints."""
        ...


def decode(data: bytes, path: str) -> str:
    """A sysfs file's bytes as text; ``SysfsError`` naming the file when they are not."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise errors.SysfsError(
            path, None, f"expected text, the kernel gave {data[:40]!r}"
        ) from None


def parse_int(text: str | bytes, path: str) -> int:
    """An integer file's value; ``SysfsError`` naming the file and quoting what it held."""
    try:
        return int(text)
    except ValueError:
        raise errors.SysfsError(
            path, None, f"expected an integer, the kernel gave {text[:40]!r}"
        ) from None


def read_int(fs: SysfsIO, path: str) -> int:
    """The integer in file ``path``; ``SysfsError`` naming it when it holds anything else
    (garbage, a value cut short, nothing), so that no reader dies of a ``ValueError``."""
    return parse_int(fs.read(path), path)


def raise_for(err: OSError, path: str, value: str | None) -> errors.SysfsError:
    """The typed error for ``err`` met while reading (value None) or writing ``path``."""
    detail = os.strerror(err.errno) if err.errno else str(err)
    if err.errno == errno_codes.EINVAL:
        return errors.SysfsInvalidError(path, err.errno, detail, value)
    if err.errno == errno_codes.EBUSY:
        return errors.SysfsBusyError(path, err.errno, detail, value)
    if err.errno in (errno_codes.ENOENT, errno_codes.ENOTDIR):
        return errors.SysfsMissingError(path, err.errno, detail, value)
    return errors.SysfsError(path, err.errno, detail, value)


class HostSysfs:
    """The real sysfs tree (or any directory laid out like it)."""

    def __init__(self, root: Path = DEFAULT_ADMIN) -> None:
        self._root = root
        self._prefix = str(root) + "/"

    @property
    def root(self) -> Path:
        return self._root

    def read(self, path: str) -> str:
        # DAMON's sysfs takes its lock with trylock, so a read can see EBUSY while another
        # writer (or the kdamond starting) holds it: a few short retries, as for writes.
        for attempt in range(_READ_BUSY_RETRIES):
            try:
                return self._read_once(path)
            except errors.SysfsBusyError:
                time.sleep(_READ_BUSY_BACKOFF_S * (attempt + 1))
        return self._read_once(path)

    def _read_once(self, path: str) -> str:
        try:
            fd = os.open(self._prefix + path, os.O_RDONLY)
        except OSError as err:
            raise raise_for(err, path, None) from err
        try:
            # A sysfs attribute is at most one page and comes whole in the first read;
            # a second read only to see EOF would add a syscall per file.
            data = os.read(fd, _PAGE)
            while len(data) == _PAGE:
                chunk = os.read(fd, _PAGE)
                if not chunk:
                    break
                data += chunk
        except OSError as err:
            raise raise_for(err, path, None) from err
        finally:
            os.close(fd)
        return decode(data, path).rstrip("\n")

    def write(self, path: str, value: str) -> None:
        try:
            fd = os.open(self._prefix + path, os.O_WRONLY)
        except OSError as err:
            raise raise_for(err, path, value) from err
        try:
            os.write(fd, value.encode())
        except OSError as err:
            raise raise_for(err, path, value) from err
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(self._prefix + path)
        except OSError as err:
            raise raise_for(err, path, None) from err

    def exists(self, path: str) -> bool:
        return os.path.exists(self._prefix + path)

    def read_table(self, path: str, entries: list[str], files: tuple[str, ...]) -> list[list[str]]:
        # Opened relative to the directory: the kernel resolves two path components per
        # file instead of a dozen, which halves the system time of a snapshot.
        try:
            directory = os.open(self._prefix + path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise raise_for(err, path, None) from err
        columns: list[list[str]] = [[] for _ in files]
        open_at, read, close = os.open, os.read, os.close
        flags = os.O_RDONLY
        try:
            for entry in entries:
                for column, name in zip(columns, files, strict=True):
                    relative = entry + "/" + name
                    try:
                        fd = open_at(relative, flags, dir_fd=directory)
                        try:
                            data = read(fd, _PAGE)
                        finally:
                            close(fd)
                        column.append(decode(data, f"{path}/{relative}"))
                    except OSError as err:
                        raise raise_for(err, f"{path}/{relative}", None) from err
        finally:
            os.close(directory)
        return columns

    def read_numbered_table(
        self, path: str, files: tuple[str, ...], own_files: tuple[str, ...] = ()
    ) -> NumberedTable:
        try:
            directory = os.open(self._prefix + path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise raise_for(err, path, None) from err
        try:
            try:
                listed = os.listdir(directory)
            except OSError as err:
                raise raise_for(err, path, None) from err
            names = sorted((n for n in listed if n.isdigit()), key=int)
            columns = [_read_int_column(directory, path, names, "/" + f) for f in files]
            own = {name: _read_own_int(directory, path, name) for name in own_files}
        finally:
            os.close(directory)
        return NumberedTable(names=names, columns=columns, own=own)


class GenericSysfs:
    """A ``HostSysfs`` seen only through ``SysfsIO``: readers take their generic path.

    The reference the fast path is tested against, and the benchmark's ``old`` reader.
    """

    def __init__(self, root: Path = DEFAULT_ADMIN) -> None:
        self._host = HostSysfs(root)

    @property
    def root(self) -> Path:
        return self._host.root

    def read(self, path: str) -> str:
        return self._host.read(path)

    def write(self, path: str, value: str) -> None:
        self._host.write(path, value)

    def listdir(self, path: str) -> list[str]:
        return self._host.listdir(path)

    def exists(self, path: str) -> bool:
        return self._host.exists(path)

    def read_table(self, path: str, entries: list[str], files: tuple[str, ...]) -> list[list[str]]:
        return self._host.read_table(path, entries, files)


def _read_int_column(directory: int, path: str, names: list[str], suffix: str) -> list[int]:
    """File ``suffix`` of every subdirectory in ``names``, opened relative to ``directory``.

    One loop per file name, not per subdirectory, and its body the least Python that
    opens, reads and closes one file: the kernel's work on each fresh file dominates a
    snapshot, this keeps what the agent adds to it small.
    """
    raw: list[bytes] = []
    append = raw.append
    open_at, read, close = os.open, os.read, os.close
    flags, size = os.O_RDONLY, _INT_BUFFER
    name = ""
    try:
        for name in names:
            fd = open_at(name + suffix, flags, dir_fd=directory)
            try:
                data = read(fd, size)
                if len(data) == size:
                    data += _read_rest(fd)
            finally:
                close(fd)
            append(data)
    except OSError as err:
        raise raise_for(err, f"{path}/{name}{suffix}", None) from err
    try:
        return list(map(int, raw))
    except ValueError:
        return [parse_int(data, f"{path}/{n}{suffix}") for n, data in zip(names, raw, strict=True)]


def _read_own_int(directory: int, path: str, name: str) -> int | None:
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=directory)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise raise_for(err, f"{path}/{name}", None) from err
    try:
        data = os.read(fd, _INT_BUFFER)
        if len(data) == _INT_BUFFER:
            data += _read_rest(fd)
    except OSError as err:
        raise raise_for(err, f"{path}/{name}", None) from err
    finally:
        os.close(fd)
    return parse_int(data, f"{path}/{name}")


def _read_rest(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _PAGE):
        chunks.append(chunk)
    return b"".join(chunks)
