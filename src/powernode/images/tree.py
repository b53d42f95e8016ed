"""The `tree` stage: the node's whole root filesystem as one deterministic tar.

The rootfs tar (mmdebstrap's) with an overlay on top: the composed module tree, the agent's
Python package and the init. Entries are written sorted by path (so every parent precedes its
children, as the kernel's initramfs unpacker needs), with numeric owners only, mtimes clamped to
SOURCE_DATE_EPOCH, and hard links turned into files: the same inputs give the same bytes.

Debian's merged /usr makes `bin`, `sbin` and `lib*` symlinks into `usr/`; a module shipping
`sbin/foo` lands in `usr/sbin/foo`, as it would on an installed system. Any other path that
would be written through a symlink, or a file replacing a directory that has contents, is
refused, naming the path.
"""

from __future__ import annotations

import io
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from powernode.errors import Conflict, Invalid

USR_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_XATTR_PREFIX = "SCHILY.xattr."
COPY_BUFFER = 1 << 20


@dataclass(frozen=True)
class Item:
    """One overlay entry: a directory, a symlink, or a file from `source` or `data`."""

    type: str  # "file" | "dir" | "symlink"
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    source: Path | None = None
    data: bytes | None = None
    target: str | None = None

    def size(self) -> int:
        if self.type != "file":
            return 0
        if self.data is not None:
            return len(self.data)
        assert self.source is not None
        return self.source.stat().st_size


@dataclass
class Overlay:
    items: dict[str, Item] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    """path -> what put it there (a module, "agent", "init"), for error messages."""

    def add(self, path: str, item: Item, origin: str) -> None:
        clean = path.strip("/")
        if not clean or any(part in ("", ".", "..") for part in clean.split("/")):
            raise Invalid(f"{origin}: {path!r} is not a clean relative path")
        self.items[clean] = item
        self.origin[clean] = origin

    def add_parents(self, path: str, origin: str, *, mtime: int) -> None:
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in self.items:
                self.add(parent, Item("dir", 0o755, mtime=mtime), origin)


@dataclass(frozen=True)
class TreeStats:
    entries: int
    bytes: int
    overlaid: int


def _normal(name: str) -> str:
    return name.removeprefix("./").rstrip("/")


def _clamp(info: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    info.mtime = min(int(info.mtime), epoch)
    info.uname = info.gname = ""
    info.pax_headers = {k: v for k, v in info.pax_headers.items() if k.startswith(_XATTR_PREFIX)}
    return info


def _usr_merge(path: str, links: dict[str, str]) -> str:
    head, _, rest = path.partition("/")
    target = links.get(head)
    if head in USR_MERGED and target == f"usr/{head}":
        return f"usr/{head}/{rest}" if rest else ""
    return path


def build_tree(rootfs_tar: Path, overlay: Overlay, out: Path, *, epoch: int) -> TreeStats:
    """Write rootfs + overlay to `out` (a new file, written then renamed)."""
    with tarfile.open(rootfs_tar, "r:") as source:
        members: dict[str, tarfile.TarInfo] = {}
        for member in source.getmembers():
            name = _normal(member.name)
            if name:
                members[name] = member
        links = {name: m.linkname.rstrip("/") for name, m in members.items() if m.issym()}
        items = _rebase(overlay, links, members)
        _check(items, overlay, members, links)
        paths = sorted(members.keys() | items.keys())
        partial = out.with_name(out.name + ".partial")
        total = 0
        with (
            partial.open("wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as sink,
        ):
            sink.copybufsize = COPY_BUFFER  # type: ignore[attr-defined]  # untyped, exists
            for path in paths:
                item = items.get(path)
                if item is not None and not (
                    item.type == "dir" and path in members and members[path].isdir()
                ):
                    info, data = _overlay_entry(path, item, epoch)
                    _add(sink, info, data)
                    total += info.size
                    continue
                member = members[path]
                info, data = _rootfs_entry(path, member, members, source, epoch)
                if item is not None:  # an overlay directory over a rootfs one: its metadata
                    info.mode, info.uid, info.gid = item.mode, item.uid, item.gid
                _add(sink, info, data)
                total += info.size
        partial.replace(out)
    return TreeStats(entries=len(paths), bytes=total, overlaid=len(items))


def _add(sink: tarfile.TarFile, info: tarfile.TarInfo, data: IO[bytes] | None) -> None:
    try:
        sink.addfile(info, data)
    finally:
        if data is not None:
            data.close()


def _rebase(
    overlay: Overlay, links: dict[str, str], members: dict[str, tarfile.TarInfo]
) -> dict[str, Item]:
    items: dict[str, Item] = {}
    for path, item in overlay.items.items():
        merged = _usr_merge(path, links)
        if not merged:
            continue  # the module's own `bin/` directory: the rootfs has it as usr/bin
        items[merged] = item
    return items


def _check(
    items: dict[str, Item],
    overlay: Overlay,
    members: dict[str, tarfile.TarInfo],
    links: dict[str, str],
) -> None:
    children: set[str] = set()
    for name in members:
        parent = name.rpartition("/")[0]
        while parent and parent not in children:
            children.add(parent)
            parent = parent.rpartition("/")[0]
    origin = {(_usr_merge(p, links) or p): o for p, o in overlay.origin.items()}
    for path, item in items.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            over = items.get(parent)
            below = members.get(parent)
            if (over is not None and over.type != "dir") or (
                over is None and below is not None and not below.isdir()
            ):
                raise Conflict(
                    f"{origin.get(path, 'overlay')}: {path} lies under {parent}, which is not a "
                    "directory in the image; it would be written through a link or a file"
                )
            if over is None and below is None:
                raise Invalid(f"{origin.get(path, 'overlay')}: {path} has no parent {parent}")
        below = members.get(path)
        if item.type == "dir" and below is not None and not below.isdir():
            kind = "symlink" if below.issym() else "file"
            raise Conflict(
                f"{origin.get(path, 'overlay')}: {path} would replace the base system's {kind} "
                "with a directory"
            )
        if item.type != "dir" and below is not None and below.isdir() and path in children:
            raise Conflict(
                f"{origin.get(path, 'overlay')}: {path} would replace a directory of the base "
                "system that has contents"
            )


def _overlay_entry(path: str, item: Item, epoch: int) -> tuple[tarfile.TarInfo, IO[bytes] | None]:
    info = tarfile.TarInfo(path)
    info.mode = item.mode & 0o7777
    info.uid, info.gid = item.uid, item.gid
    info.mtime = min(item.mtime, epoch)
    if item.type == "dir":
        info.type = tarfile.DIRTYPE
        return info, None
    if item.type == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = item.target or ""
        return info, None
    info.type = tarfile.REGTYPE
    info.size = item.size()
    if item.data is not None:
        return info, io.BytesIO(item.data)
    assert item.source is not None
    return info, item.source.open("rb")


def _rootfs_entry(
    path: str,
    member: tarfile.TarInfo,
    members: dict[str, tarfile.TarInfo],
    source: tarfile.TarFile,
    epoch: int,
) -> tuple[tarfile.TarInfo, IO[bytes] | None]:
    info = _clamp(_copy(member, path), epoch)
    if member.islnk():  # a hard link: written as a copy of its target
        target = members.get(_normal(member.linkname))
        if target is None or not target.isfile():
            raise Invalid(f"base system: hard link {path} -> {member.linkname} has no file")
        info.type = tarfile.REGTYPE
        info.linkname = ""
        info.size = target.size
        return info, source.extractfile(target)
    if member.isfile():
        return info, source.extractfile(member)
    return info, None


def _copy(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    for attr in ("mode", "uid", "gid", "size", "mtime", "type", "linkname", "devmajor", "devminor"):
        setattr(info, attr, getattr(member, attr))
    info.pax_headers = dict(member.pax_headers)
    return info


def file_type(member: tarfile.TarInfo) -> int:
    """The stat file-type bits of a tar member."""
    if member.isdir():
        return stat.S_IFDIR
    if member.issym():
        return stat.S_IFLNK
    if member.ischr():
        return stat.S_IFCHR
    if member.isblk():
        return stat.S_IFBLK
    if member.isfifo():
        return stat.S_IFIFO
    return stat.S_IFREG
