"""The /proc and /sys files under the userspace operations, read and written with numpy.

- ``/proc/PID/maps``: the process's VMAs, parsed into ``VirtualMapping``. The
  ``[vsyscall]`` line is left out of what the monitor sees: it is a fixed gate page above
  the user address space, not a VMA, and the kernel's vaddr operations never see it
  either (with it, the two biggest gaps would be counted wrongly).
- ``/proc/PID/pagemap``: one 64-bit entry per virtual page
  (Documentation/admin-guide/mm/pagemap.rst): bits 0-54 the page frame number (only
  shown to CAP_SYS_ADMIN; zero otherwise), 55 soft-dirty, 56 exclusively mapped, 61
  file page or shared anonymous, 62 swapped, 63 present. ``decode_pagemap`` turns raw
  bytes into these fields; ``read_pagemap_at`` reads one entry per sampled address (one
  ``pread`` each: sampled addresses are one per region, far apart).
- ``/proc/PID/clear_refs``: writing ``4`` clears the soft-dirty bits of the whole process
  (and write-protects its pages, so the next write to each page faults once and sets the
  bit again).
- ``/sys/kernel/mm/page_idle/bitmap``: one bit per page frame, in 64-bit words that must
  be read and written whole; writing 1 marks a frame idle, reading tells whether it still
  is (the kernel first walks the frame's mappings and clears the flag if any was young).

A process that exited (its /proc directory gone, or a zombie without an address space)
reads as having no mappings and no present pages, and clearing its soft-dirty bits does
nothing: monitoring a process that exits is normal on a node. A live process whose files
refuse us raises ``userspace_errors.ProcFileError``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from damon_agent.ops import userspace_errors as errors

ENTRY_BYTES: Final = 8
PFN_BITS: Final = 55
SOFT_DIRTY_BIT: Final = 55
EXCLUSIVE_BIT: Final = 56
FILE_OR_SHARED_BIT: Final = 61
SWAPPED_BIT: Final = 62
PRESENT_BIT: Final = 63
CLEAR_SOFT_DIRTY: Final = b"4"
# Mappings that are not ordinary memory: the kernel refuses madvise and move_pages on
# them (VM_PFNMAP / VM_IO) or they are not VMAs at all.
SPECIAL_MAPPINGS: Final = frozenset({"[vsyscall]", "[vvar]", "[vvar_vclock]", "[vdso]"})
NOT_A_VMA: Final = frozenset({"[vsyscall]"})
# Errnos of a /proc/PID file whose process is gone (ESRCH: the task died while we read).
_GONE_ERRNOS: Final = frozenset({errno.ENOENT, errno.ESRCH})
_NOTHING_KNOWN: Final = bytes(8)


def _bit(number: int) -> np.uint64:
    return np.uint64(1 << number)


_PFN_MASK: Final = np.uint64((1 << PFN_BITS) - 1)


# -- maps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VirtualMapping:
    """One line of /proc/PID/maps: a VMA [start, end) with its permissions and backing."""

    start: int
    end: int
    perms: str  # "rwxp" / "r--s": read, write, execute, private or shared
    offset: int
    device: str
    inode: int
    path: str  # file path, "[heap]", "[stack]", ..., or "" for anonymous memory

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def accessible(self) -> bool:
        """False for PROT_NONE areas (guard pages, reserved address space): no pages."""
        return self.perms[:3] != "---"

    @property
    def special(self) -> bool:
        return self.path in SPECIAL_MAPPINGS

    @property
    def actionable(self) -> bool:
        """Whether madvise and move_pages can have anything to do here."""
        return self.accessible and not self.special


def parse_maps(text: str, source: str) -> list[VirtualMapping]:
    """Parse the text of /proc/PID/maps (sorted by address, as the kernel writes it)."""
    mappings: list[VirtualMapping] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            raise errors.MalformedProcFileError(
                source,
                f"line {number}: expected 'start-end perms offset dev inode [path]', got {line!r}",
            )
        span, perms, offset, device, inode = fields[:5]
        low, dash, high = span.partition("-")
        try:
            if not dash:
                raise ValueError(span)
            start, end = int(low, 16), int(high, 16)
            offset_value, inode_value = int(offset, 16), int(inode)
        except ValueError:
            raise errors.MalformedProcFileError(
                source, f"line {number}: addresses, offset or inode are not numbers: {line!r}"
            ) from None
        if end <= start or len(perms) != 4:
            raise errors.MalformedProcFileError(
                source, f"line {number}: empty range or bad permissions: {line!r}"
            )
        path = fields[5].strip() if len(fields) == 6 else ""
        mappings.append(VirtualMapping(start, end, perms, offset_value, device, inode_value, path))
    return mappings


def read_maps(pid: int, proc_root: Path) -> list[VirtualMapping]:
    """The VMAs of ``pid`` (empty when the process is gone or has no address space)."""
    path = _proc_file(proc_root, pid, "maps")
    try:
        with open(path) as maps:
            text = maps.read()
    except OSError as error:
        if error.errno in _GONE_ERRNOS:
            return []
        raise errors.ProcFileError(path, f"cannot read: {error.strerror}") from None
    return [m for m in parse_maps(text, str(path)) if m.path not in NOT_A_VMA]


# -- pagemap --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PagemapEntries:
    """Decoded pagemap entries, one per page asked for (all bits zero: nothing known)."""

    raw: NDArray[np.uint64]

    def _flag(self, bit: int) -> NDArray[np.bool_]:
        flags: NDArray[np.bool_] = np.not_equal(self.raw & _bit(bit), 0)
        return flags

    @property
    def present(self) -> NDArray[np.bool_]:
        return self._flag(PRESENT_BIT)

    @property
    def swapped(self) -> NDArray[np.bool_]:
        return self._flag(SWAPPED_BIT)

    @property
    def soft_dirty(self) -> NDArray[np.bool_]:
        return self._flag(SOFT_DIRTY_BIT)

    @property
    def exclusive(self) -> NDArray[np.bool_]:
        return self._flag(EXCLUSIVE_BIT)

    @property
    def file_or_shared(self) -> NDArray[np.bool_]:
        return self._flag(FILE_OR_SHARED_BIT)

    @property
    def pfn(self) -> NDArray[np.int64]:
        """Page frame number of present pages; -1 where not present (swap bits are not PFNs)."""
        frames = (self.raw & _PFN_MASK).astype(np.int64)
        return np.where(self.present, frames, np.int64(-1))


def decode_pagemap(data: bytes, source: str) -> PagemapEntries:
    """Decode raw pagemap bytes (little-endian 64-bit entries)."""
    if len(data) % ENTRY_BYTES:
        raise errors.MalformedProcFileError(
            source, f"{len(data)} bytes is not a whole number of {ENTRY_BYTES}-byte entries"
        )
    return PagemapEntries(np.frombuffer(data, dtype="<u8").astype(np.uint64))


def read_pagemap_at(
    pid: int, addrs: Sequence[int] | NDArray[np.int64], proc_root: Path, page_size: int
) -> PagemapEntries:
    """The entry of the page holding each address (zeros when the process is gone)."""
    indices = np.asarray(addrs, dtype=np.int64) // page_size
    path = _proc_file(proc_root, pid, "pagemap")
    fd = _open_pagemap(path)
    if fd is None:
        return PagemapEntries(np.zeros(indices.size, dtype=np.uint64))
    chunks: list[bytes] = []
    try:
        for offset in (indices * ENTRY_BYTES).tolist():
            data = _pread(fd, path, ENTRY_BYTES, offset)
            # Short: past the address space, or the address space went away (zombie).
            chunks.append(data if len(data) == ENTRY_BYTES else _NOTHING_KNOWN)
    finally:
        os.close(fd)
    raw = np.frombuffer(b"".join(chunks), dtype="<u8").astype(np.uint64)
    return PagemapEntries(raw)


def read_pagemap_range(
    pid: int, start: int, end: int, proc_root: Path, page_size: int
) -> PagemapEntries:
    """The entries of every page of [start, end) (zeros when the process is gone)."""
    first = start // page_size
    count = max(0, -(-end // page_size) - first)
    path = _proc_file(proc_root, pid, "pagemap")
    fd = _open_pagemap(path)
    if fd is None:
        return PagemapEntries(np.zeros(count, dtype=np.uint64))
    try:
        data = _pread(fd, path, count * ENTRY_BYTES, first * ENTRY_BYTES)
    finally:
        os.close(fd)
    whole = len(data) - len(data) % ENTRY_BYTES
    entries = decode_pagemap(data[:whole], str(path)).raw
    return PagemapEntries(np.concatenate([entries, np.zeros(count - entries.size, np.uint64)]))


def _proc_file(proc_root: Path, pid: int, name: str) -> str:
    # A string, not a Path: this runs per target per sampling interval, and building
    # Path objects costs more than the system calls that follow.
    return f"{os.fspath(proc_root)}/{pid}/{name}"


def _open_pagemap(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as error:
        if error.errno in _GONE_ERRNOS:
            return None
        raise errors.ProcFileError(path, f"cannot open: {error.strerror}") from None


def _pread(fd: int, path: str, length: int, offset: int) -> bytes:
    try:
        return os.pread(fd, length, offset)
    except OSError as error:
        if error.errno in _GONE_ERRNOS:
            return b""
        raise errors.ProcFileError(path, f"cannot read at {offset}: {error.strerror}") from None


# -- clear_refs -----------------------------------------------------------------------------


def clear_soft_dirty(pid: int, proc_root: Path) -> bool:
    """Clear the soft-dirty bits of all of ``pid``'s pages; False if the process is gone."""
    path = _proc_file(proc_root, pid, "clear_refs")
    try:
        # No O_CREAT: a missing file means a gone process, never a file to make. O_APPEND
        # because procfs ignores the position, while a checked-in fake file then keeps
        # every write for a test to count.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as error:
        if error.errno in _GONE_ERRNOS:
            return False
        raise errors.ProcFileError(path, f"cannot open for writing: {error.strerror}") from None
    try:
        os.write(fd, CLEAR_SOFT_DIRTY)
    except OSError as error:
        if error.errno in _GONE_ERRNOS:
            return False
        raise errors.ProcFileError(path, f"writing '4' failed: {error.strerror}") from None
    finally:
        os.close(fd)
    return True


# -- page_idle/bitmap -----------------------------------------------------------------------

_WORD_BITS: Final = 64


def _words_and_masks(pfns: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.uint64]]:
    """The bitmap words holding ``pfns`` (sorted, unique) and, per word, the bits to set."""
    words = pfns // _WORD_BITS
    bits = np.left_shift(np.uint64(1), (pfns % _WORD_BITS).astype(np.uint64))
    unique, inverse = np.unique(words, return_inverse=True)
    masks = np.zeros(unique.size, dtype=np.uint64)
    np.bitwise_or.at(masks, inverse, bits)
    return unique, masks


def mark_idle(bitmap: Path, pfns: NDArray[np.int64]) -> None:
    """Mark the frames ``pfns`` idle: one whole-word write per word that holds any."""
    if pfns.size == 0:
        return
    words, masks = _words_and_masks(pfns)
    fd = _open_bitmap(bitmap, os.O_WRONLY)
    try:
        for word, mask in zip(words.tolist(), masks.tolist(), strict=True):
            try:
                os.pwrite(fd, int(mask).to_bytes(ENTRY_BYTES, "little"), word * ENTRY_BYTES)
            except OSError as error:
                raise errors.ProcFileError(
                    bitmap, f"marking frames of word {word} idle failed: {error.strerror}"
                ) from None
    finally:
        os.close(fd)


def read_idle(bitmap: Path, pfns: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether each frame of ``pfns`` is still idle (not accessed since marked)."""
    idle = np.zeros(pfns.size, dtype=bool)
    if pfns.size == 0:
        return idle
    words = pfns // _WORD_BITS
    values: dict[int, int] = {}
    fd = _open_bitmap(bitmap, os.O_RDONLY)
    try:
        for word in np.unique(words).tolist():
            try:
                data = os.pread(fd, ENTRY_BYTES, word * ENTRY_BYTES)
            except OSError as error:
                raise errors.ProcFileError(
                    bitmap, f"reading word {word} failed: {error.strerror}"
                ) from None
            values[word] = int.from_bytes(data.ljust(ENTRY_BYTES, b"\0"), "little")
    finally:
        os.close(fd)
    for position, (word, pfn) in enumerate(zip(words.tolist(), pfns.tolist(), strict=True)):
        idle[position] = bool(values[word] >> (pfn % _WORD_BITS) & 1)
    return idle


def _open_bitmap(bitmap: Path, flags: int) -> int:
    try:
        return os.open(bitmap, flags)
    except OSError as error:
        raise errors.ProcFileError(bitmap, f"cannot open: {error.strerror}") from None
