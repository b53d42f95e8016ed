"""A newc ("070701") cpio writer: the initramfs format the Linux kernel unpacks.

Deterministic by construction: entries are written in the order given (the tree is sorted),
inode numbers are assigned sequentially, device numbers are zero, mtimes are clamped to the
build's SOURCE_DATE_EPOCH, and hard links are written as independent files (the kernel's
unpacker accepts either; independent entries keep the archive a pure function of the tree).

Each entry is a 110-byte ASCII header (13 eight-digit hex fields), the NUL-terminated name padded
to a multiple of 4, then the data padded to a multiple of 4; a `TRAILER!!!` entry ends it.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from typing import IO, Final

MAGIC: Final = b"070701"
TRAILER: Final = "TRAILER!!!"
CHUNK: Final = 1 << 20
_MAX_FIELD: Final = 0xFFFFFFFF


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class CpioWriter:
    """Writes newc entries to a binary stream (typically a compressor's writer)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._ino = 0
        self.entries = 0
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes_written += len(data)

    def _header(
        self,
        name: str,
        mode: int,
        *,
        uid: int,
        gid: int,
        mtime: int,
        size: int,
        nlink: int = 1,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        if size > _MAX_FIELD:
            raise ValueError(f"{name}: {size} bytes is too large for a newc cpio entry (4 GiB)")
        encoded = name.encode("utf-8", "surrogateescape") + b"\0"
        self._ino += 1
        fields = (
            self._ino,
            mode,
            uid,
            gid,
            nlink,
            max(0, mtime),
            size,
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check (only used by the "070702" crc format)
        )
        header = MAGIC + b"".join(b"%08X" % (value & _MAX_FIELD) for value in fields)
        self._write(header + encoded + _pad(len(header) + len(encoded)))
        self.entries += 1

    def directory(self, name: str, perm: int, *, uid: int, gid: int, mtime: int) -> None:
        self._header(name, stat.S_IFDIR | perm, uid=uid, gid=gid, mtime=mtime, size=0, nlink=2)

    def symlink(self, name: str, target: str, *, uid: int, gid: int, mtime: int) -> None:
        data = target.encode("utf-8", "surrogateescape")
        self._header(name, stat.S_IFLNK | 0o777, uid=uid, gid=gid, mtime=mtime, size=len(data))
        self._write(data + _pad(len(data)))

    def device(
        self,
        name: str,
        kind: int,
        perm: int,
        rdev: tuple[int, int],
        *,
        uid: int,
        gid: int,
        mtime: int,
    ) -> None:
        """A character (`stat.S_IFCHR`), block (`S_IFBLK`) or FIFO (`S_IFIFO`) entry."""
        self._header(name, kind | perm, uid=uid, gid=gid, mtime=mtime, size=0, rdev=rdev)

    def file(
        self,
        name: str,
        perm: int,
        size: int,
        chunks: Iterator[bytes],
        *,
        uid: int,
        gid: int,
        mtime: int,
    ) -> None:
        """A regular file of `size` bytes whose content `chunks` yields (exactly `size`)."""
        self._header(name, stat.S_IFREG | perm, uid=uid, gid=gid, mtime=mtime, size=size)
        written = 0
        for chunk in chunks:
            written += len(chunk)
            self._write(chunk)
        if written != size:
            raise ValueError(f"{name}: expected {size} bytes, got {written}")
        self._write(_pad(size))

    def close(self) -> None:
        """Write the trailer (the stream itself is the caller's to close)."""
        self._header(TRAILER, 0, uid=0, gid=0, mtime=0, size=0, nlink=1)


def read_chunks(handle: IO[bytes], size: int) -> Iterator[bytes]:
    """Exactly `size` bytes of `handle`, in chunks; a short read is an error."""
    remaining = size
    while remaining:
        chunk = handle.read(min(CHUNK, remaining))
        if not chunk:
            raise ValueError(f"unexpected end of data, {remaining} bytes short")
        remaining -= len(chunk)
        yield chunk
