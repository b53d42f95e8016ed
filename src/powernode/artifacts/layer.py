"""The safe reader of module layers (tar compressed with zstd), used before a tree is activated.

Depends only on the standard library, `zstandard`, `powernode.errors` and
`powernode.artifacts.zstdframes` (standard library only), so the agent can use it without the
server stack.

Contract of `read_module_layer`: it streams (memory stays bounded whatever the layer's size and
compression ratio) and yields members in archive order. A member's `content` can be read only
until the next member is asked for. Some checks can only be made at the end (the stream was
complete, its digest, where every symlink leads), so a layer is accepted only when the
iteration ends without an error: extract into a staging directory and activate it only then.
Any refusal is a `LayerError` naming the member, when there is one, and the cause.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import IO, Protocol, cast

import zstandard

from powernode.artifacts.zstdframes import FrameTracker
from powernode.errors import Invalid

FILE, DIR, SYMLINK, HARDLINK = "file", "dir", "symlink", "hardlink"
DEFAULT_MAX_LAYER_SIZE = 8 << 30
"""Default limit of the compressed layer, in bytes."""
DEFAULT_MAX_TREE_SIZE = 32 << 30
"""Default limit of the uncompressed tar stream, in bytes (zstd bombs stop here)."""
CHUNK = 1 << 20
_MAX_SYMLINK_HOPS = 40  # Linux's own limit (ELOOP)
_TAR_END = 1024  # a tar ends with two zero blocks
_KINDS = {
    tarfile.REGTYPE: FILE,
    tarfile.AREGTYPE: FILE,
    tarfile.DIRTYPE: DIR,
    tarfile.SYMTYPE: SYMLINK,
    tarfile.LNKTYPE: HARDLINK,
}
_REFUSED_KINDS = {
    tarfile.CHRTYPE: "a device node; module layers hold no devices",
    tarfile.BLKTYPE: "a device node; module layers hold no devices",
    tarfile.FIFOTYPE: "a fifo; module layers hold no fifos",
}


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class LayerError(Invalid):
    """A module layer the reader refuses: names the member (when there is one) and the cause."""

    title = "Unsafe or damaged module layer"

    def __init__(self, member: str | None, cause: str) -> None:
        where = f"module layer member {member!r}" if member else "module layer"
        super().__init__(f"{where}: {cause}", member=member, cause=cause)
        self.member = member
        self.cause = cause


@dataclass(frozen=True)
class LayerMember:
    """One member of a module layer. `target` is a symlink's target or a hard link's source."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    target: str | None = None
    content: Readable | None = field(default=None, compare=False, repr=False)


class _Source:
    """The compressed side: counts, hashes and checks that every zstd frame is complete."""

    def __init__(self, raw: Readable, limit: int, expected_size: int | None) -> None:
        self.raw, self.limit, self.expected_size = raw, limit, expected_size
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.frames = FrameTracker()
        self.member: str | None = None

    def read(self, size: int = -1, /) -> bytes:
        data = self.raw.read(CHUNK if size < 0 else size)
        self.size += len(data)
        if self.size > self.limit:
            raise LayerError(
                self.member, f"the layer is larger than the limit of {self.limit} bytes"
            )
        if self.expected_size is not None and self.size > self.expected_size:
            raise LayerError(
                self.member, f"the layer is larger than its declared {self.expected_size} bytes"
            )
        self.sha256.update(data)
        try:
            self.frames.feed(data)
        except ValueError as exc:
            raise LayerError(self.member, str(exc)) from None
        return data


class _Tar:
    """The uncompressed side: counts, and remembers where the last non-zero byte was."""

    def __init__(self, source: _Source, limit: int) -> None:
        self.source, self.limit = source, limit
        # Both libraries only call read(); their stubs ask for a whole file object.
        self.reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", source), read_size=CHUNK, read_across_frames=True
        )
        self.size = 0
        self.data_end = 0

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self.reader.read(CHUNK if size < 0 else size)
        except zstandard.ZstdError as exc:
            raise LayerError(self.source.member, f"the zstd stream is damaged: {exc}") from None
        self.size += len(data)
        if self.size > self.limit:
            raise LayerError(
                self.source.member, f"the tree is larger than the limit of {self.limit} bytes"
            )
        stripped = len(data.rstrip(b"\0"))
        if stripped:
            self.data_end = self.size - len(data) + stripped
        return data


class _Content:
    """A member's content; a short read is a truncated layer, reported with the member."""

    def __init__(self, inner: Readable, path: str) -> None:
        self.inner, self.path = inner, path

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self.inner.read(size)
        except tarfile.TarError as exc:
            raise LayerError(self.path, f"the layer is truncated ({exc})") from None


def read_module_layer(
    source: Readable,
    *,
    max_layer_size: int = DEFAULT_MAX_LAYER_SIZE,
    max_tree_size: int = DEFAULT_MAX_TREE_SIZE,
    max_member_size: int | None = None,
    allow_setid: bool = False,
    expected_size: int | None = None,
    expected_digest: str | None = None,
) -> Iterator[LayerMember]:
    """Members of the tar+zstd layer in `source`, each checked; see the module docstring.

    Refuses: absolute paths, empty/`.`/`..` components, a path twice, a path under a symlink,
    hard links to anything but an earlier regular file, symlinks leading out of the root
    (absolute targets are taken inside the root, as on the node), devices, fifos and other
    member types, setuid/setgid files unless `allow_setid` (directories may carry them), a
    member over `max_member_size`, a compressed layer over `max_layer_size` or
    `expected_size`, an uncompressed stream over `max_tree_size`, a digest other than
    `expected_digest`, and a stream cut short or followed by anything.
    """
    src = _Source(source, max_layer_size, expected_size)
    tar_stream = _Tar(src, max_tree_size)
    tree = _Tree(allow_setid, max_member_size)
    try:
        archive = tarfile.open(fileobj=cast("IO[bytes]", tar_stream), mode="r|")  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        _finish(tar_stream, 0)  # a cut zstd stream explains an empty or broken tar best
        raise LayerError(None, f"the layer is not a tar stream ({exc})") from None
    with archive:
        while True:
            try:
                info = archive.next()
            except tarfile.TarError as exc:
                raise LayerError(src.member, f"unreadable tar header after it ({exc})") from None
            if info is None:
                break
            member = tree.check(info)
            if member is None:
                continue
            src.member = member.path
            handle = archive.extractfile(info) if member.type == FILE else None
            content = _Content(handle, member.path) if handle is not None else None
            yield replace(member, content=content)
        end = archive.offset
    src.member = None
    _finish(tar_stream, end)
    tree.check_symlinks()
    digest = "sha256:" + src.sha256.hexdigest()
    if expected_size is not None and src.size != expected_size:
        raise LayerError(None, f"the layer has {src.size} bytes, not the declared {expected_size}")
    if expected_digest is not None and digest != expected_digest:
        raise LayerError(
            None, f"the layer's digest is {digest}, not the declared {expected_digest}"
        )


def _finish(tar_stream: _Tar, end: int) -> None:
    """Read to the end: the tar must end with its zero blocks, the zstd stream right after."""
    while tar_stream.read(CHUNK):
        pass
    if tar_stream.source.read(1):
        raise LayerError(None, "there is data after the end of the zstd stream")
    if not tar_stream.source.frames.complete():
        raise LayerError(None, "the zstd stream is truncated")
    if tar_stream.size < end + _TAR_END or tar_stream.data_end > end:
        raise LayerError(None, "the tar stream is truncated or has data after its end")


def _normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") if name not in ("", "/") else name


def _check_path(path: str, what: str) -> None:
    if path.startswith("/"):
        raise LayerError(path, f"{what} is an absolute path")
    # A backslash is an ordinary byte in a Linux file name (systemd escapes unit names with it:
    # `system-systemd\x2dcryptsetup.slice`); only NUL cannot be in a path.
    if "\x00" in path:
        raise LayerError(path, f"{what} holds a NUL byte")
    parts = path.split("/")
    if ".." in parts:
        raise LayerError(path, f"{what} has a '..' component and could escape the root")
    if any(part in ("", ".") for part in parts):
        raise LayerError(path, f"{what} has an empty or '.' component")


def _ancestors(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


class _Tree:
    """What the layer holds so far, to refuse members that would be unsafe to extract."""

    def __init__(self, allow_setid: bool, max_member_size: int | None) -> None:
        self.allow_setid, self.max_member_size = allow_setid, max_member_size
        self.types: dict[str, str] = {}
        self.ancestors: set[str] = set()
        self.symlinks: dict[str, str] = {}

    def check(self, info: tarfile.TarInfo) -> LayerMember | None:
        path = _normalize(info.name)
        if path in ("", "."):
            return None  # the root itself
        _check_path(path, "the path")
        if path in self.types:
            raise LayerError(path, "the path appears twice in the layer")
        for ancestor in _ancestors(path):
            if ancestor in self.symlinks:
                raise LayerError(path, f"it would be written through the symlink {ancestor!r}")
            if self.types.get(ancestor, DIR) != DIR:
                raise LayerError(path, f"its parent {ancestor!r} is not a directory")
        kind = self._kind(info, path)
        if kind != DIR and path in self.ancestors:
            raise LayerError(path, "an earlier member needs this path to be a directory")
        mode = info.mode & 0o7777
        if mode & 0o6000 and kind in (FILE, HARDLINK) and not self.allow_setid:
            raise LayerError(path, f"it is setuid or setgid (mode {mode:o}), which is not allowed")
        if info.uid < 0 or info.gid < 0:
            raise LayerError(path, "it has a negative uid or gid")
        if self.max_member_size is not None and info.size > self.max_member_size:
            raise LayerError(
                path, f"it has {info.size} bytes, over the limit of {self.max_member_size}"
            )
        target = self._target(info, path, kind)
        self.types[path] = kind
        self.ancestors.update(_ancestors(path))
        size = info.size if kind == FILE else 0
        return LayerMember(path, kind, mode, info.uid, info.gid, size, int(info.mtime), target)

    @staticmethod
    def _kind(info: tarfile.TarInfo, path: str) -> str:
        kind = _KINDS.get(info.type)
        if kind is None:
            why = _REFUSED_KINDS.get(info.type, f"the unsupported tar member type {info.type!r}")
            raise LayerError(path, f"it is {why}")
        return kind

    def _target(self, info: tarfile.TarInfo, path: str, kind: str) -> str | None:
        if kind == HARDLINK:
            source = _normalize(info.linkname)
            _check_path(source, "the hard link's source")
            if self.types.get(source) not in (FILE, HARDLINK):
                raise LayerError(
                    path, f"it is a hard link to {info.linkname!r}, not to an earlier file"
                )
            return source
        if kind == SYMLINK:
            if not info.linkname or "\x00" in info.linkname:
                raise LayerError(path, "it is a symlink with an empty or invalid target")
            self.symlinks[path] = info.linkname
            if _escapes(path, self.symlinks):
                raise LayerError(path, f"it is a symlink to {info.linkname!r}, out of the root")
            return info.linkname
        return None

    def check_symlinks(self) -> None:
        """Where every symlink leads, now that all of them are known."""
        for path, target in self.symlinks.items():
            if _escapes(path, self.symlinks):
                raise LayerError(path, f"it is a symlink to {target!r}, out of the root")


def _escapes(link: str, symlinks: Mapping[str, str]) -> bool:
    """Whether resolving `link` inside the root climbs above it (or loops)."""
    stack: list[str] = []
    todo = [link]
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if "/" in part:
            todo.extend(reversed(part.split("/")))
            continue
        if part == "..":
            if not stack:
                return True
            stack.pop()
            continue
        stack.append(part)
        target = symlinks.get("/".join(stack))
        if target is not None:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                return True
            stack.pop()
            if target.startswith("/"):
                stack.clear()
            todo.append(target)
    return False
