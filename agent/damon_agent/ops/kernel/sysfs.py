"""File access to the DAMON sysfs admin directory, behind one small interface.

``SysfsIO`` is all the driver needs: read a file, write a file, list a directory, test a
path; paths are relative to the admin directory (``/sys/kernel/mm/damon/admin``), which is
injected, so tests point the driver at a fake tree (``fake.FakeDamonSysfs``) and real
tests at the host.

``HostSysfs`` maps ``OSError`` to the typed errors of ``errors`` by errno, naming the file
and the value. It uses ``os.open``/``os.read`` directly: a snapshot reads four small files
per region, up to a few thousand a second, and the buffered ``open()`` path costs several
times more CPU per file.
"""

from __future__ import annotations

import errno as errno_codes
import os
from pathlib import Path
from typing import Final, Protocol

from damon_agent.ops.kernel import errors

DEFAULT_ADMIN: Final = Path("/sys/kernel/mm/damon/admin")
_PAGE: Final = 4096


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
        return data.decode().rstrip("\n")

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
                            column.append(read(fd, _PAGE).decode())
                        finally:
                            close(fd)
                    except OSError as err:
                        raise raise_for(err, f"{path}/{relative}", None) from err
        finally:
            os.close(directory)
        return columns
