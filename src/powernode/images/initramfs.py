"""The initramfs format: the kernel plus one compressed newc cpio holding the whole node.

Written from the tree tar by our own cpio writer (images/cpio.py), streamed through zstd (or
gzip), with `/boot` left out (the kernel is beside it) and the kernel modules cut down to the
drivers the init loads and what they depend on: the full set is most of a Debian rootfs's
bytes and a RAM-booted node would carry it in memory for nothing.

zstd runs multi-threaded: its output does not depend on the number of workers, so the bytes are
the same on any machine (for a given zstandard release, pinned in pyproject.toml).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from powernode.agent.boot import DRIVERS
from powernode.errors import Invalid
from powernode.images.cpio import CpioWriter, read_chunks
from powernode.images.tree import file_type

ZSTD_LEVEL = 3
COMPRESSIONS = ("zstd", "gzip")


@dataclass(frozen=True)
class InitramfsStats:
    entries: int
    cpio_bytes: int
    compressed_bytes: int
    modules_kept: int
    sha256: str


def module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.zst", ".ko.xz", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def module_closure(modules_dep: dict[str, list[str]], wanted: Iterable[str]) -> set[str]:
    """The module files (relative to the kernel's module directory) for `wanted` module names
    and everything they depend on; names not in the table are built in or absent."""
    by_name = {module_name(path): path for path in modules_dep}
    keep: set[str] = set()
    todo = [by_name[name] for name in wanted if name in by_name]
    while todo:
        path = todo.pop()
        if path not in keep:
            keep.add(path)
            todo.extend(modules_dep.get(path, []))
    return keep


class _Counting:
    """A write-only stream that hashes and counts what passes to the file beneath."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def write_initramfs(
    tree_tar: Path,
    out: Path,
    *,
    kernel_version: str,
    modules_dep: dict[str, list[str]],
    compression: str = "zstd",
    drivers: Iterable[str] | None = DRIVERS,
    threads: int | None = None,
) -> InitramfsStats:
    """Write the tree as an initramfs; `drivers=None` keeps every kernel module. zstd uses
    `threads` workers (default: one per core); the bytes are the same for any number."""
    if compression not in COMPRESSIONS:
        raise Invalid(f"initramfs compression {compression!r}: use one of {COMPRESSIONS}")
    module_dir = f"usr/lib/modules/{kernel_version}/"
    keep = (
        {module_dir + path for path in module_closure(modules_dep, drivers)}
        if drivers is not None
        else None
    )
    partial = out.with_name(out.name + ".partial")
    with partial.open("wb") as raw:
        counted = _Counting(raw)
        compressor: IO[bytes]
        if compression == "zstd":
            params = zstandard.ZstdCompressionParameters.from_level(
                ZSTD_LEVEL, threads=threads or max(1, os.cpu_count() or 1)
            )
            compressor = zstandard.ZstdCompressor(compression_params=params).stream_writer(
                cast(IO[bytes], counted), closefd=False
            )
        else:
            compressor = cast(
                IO[bytes],
                gzip.GzipFile(
                    filename="",
                    mode="wb",
                    fileobj=cast(IO[bytes], counted),
                    mtime=0,
                    compresslevel=6,
                ),
            )
        writer = CpioWriter(compressor)
        kept = _write_entries(writer, tree_tar, module_dir, keep)
        writer.close()
        compressor.close()
    partial.replace(out)
    return InitramfsStats(
        entries=writer.entries,
        cpio_bytes=writer.bytes_written,
        compressed_bytes=counted.size,
        modules_kept=kept,
        sha256=counted.hash.hexdigest(),
    )


def _write_entries(
    writer: CpioWriter, tree_tar: Path, module_dir: str, keep: set[str] | None
) -> int:
    kept = 0
    with tarfile.open(tree_tar, "r:") as tar:
        for member in tar:
            name = member.name
            if name.startswith("boot/"):
                continue
            if name.startswith(module_dir + "kernel/") and not member.isdir():
                if keep is not None and name not in keep:
                    continue
                kept += 1
            owner = {"uid": member.uid, "gid": member.gid, "mtime": int(member.mtime)}
            kind = file_type(member)
            perm = member.mode & 0o7777
            if kind == stat.S_IFDIR:
                writer.directory(name, perm, **owner)
            elif kind == stat.S_IFLNK:
                writer.symlink(name, member.linkname, **owner)
            elif kind == stat.S_IFREG:
                handle = tar.extractfile(member)
                assert handle is not None
                with handle:
                    writer.file(name, perm, member.size, read_chunks(handle, member.size), **owner)
            else:
                writer.device(name, kind, perm, (member.devmajor, member.devminor), **owner)
    return kept
