"""Extract a module layer into a new tree: the safe reader in one thread, the writes in another.

Contract of `extract_layer`: the calling thread reads the layer with `read_module_layer` (the
layer's sha256, zstd decompression, tar parsing and every safety check) and hands each member,
and a file's bytes in chunks, to one writer thread, which creates the tree in archive order and
computes each file's sha256 and fs-verity digest from the bytes it writes (nothing is read
back). Most of either side's time is spent outside the GIL (zstd, hashlib, write(2)), so the
two overlap. Work travels in batches through a bounded queue, so memory stays bounded. An
error on either side stops both, and the writer is joined before `extract_layer` returns or
raises: nothing writes to the tree afterwards. Because the reader refuses some layers only at
the end of the stream, the tree counts only when `extract_layer` returned.

Extraction never follows a symlink: the reader refuses members under a symlink and files are
created with O_EXCL | O_NOFOLLOW. Ownership is applied only when running as root; directory
metadata last, deepest first (a read-only directory is filled by then).
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from powernode.agent.modules.digests import FileDigests
from powernode.artifacts import layer as layer_reader
from powernode.artifacts.layer import LayerMember, Readable, read_module_layer

CHUNK = 1 << 20
BATCH_BYTES = 1 << 20
"""A batch goes to the writer once it carries this many bytes of file content..."""
BATCH_ITEMS = 256
"""...or this many items."""
QUEUE_BATCHES = 32
"""Batches waiting for the writer at most (so at most ~32 MiB of content in flight)."""

_MEMBER, _OPEN, _DATA, _CLOSE = range(4)
_Item = tuple[int, Any]


@dataclass(frozen=True)
class LayerLimits:
    """Limits and expectations the reader enforces on one layer."""

    max_layer_size: int
    max_tree_size: int
    max_member_size: int | None
    expected_size: int
    expected_digest: str


def extract_layer(layer: Readable, tree: Path, limits: LayerLimits) -> list[dict[str, Any]]:
    """Extract `layer` into the new directory `tree`; its entries, in archive order.

    Raises what the reader raises (`LayerError`, `Invalid`) and OSError from the writes.
    """
    tree.mkdir(mode=0o755)
    writer = _Writer(_Tree(tree, as_root=os.geteuid() == 0))
    writer.start()
    items: list[_Item] = []
    size = 0
    try:
        members = read_module_layer(
            layer,
            max_layer_size=limits.max_layer_size,
            max_tree_size=limits.max_tree_size,
            max_member_size=limits.max_member_size,
            expected_size=limits.expected_size,
            expected_digest=limits.expected_digest,
        )
        for member in members:
            if member.type != layer_reader.FILE or member.content is None:
                items.append((_MEMBER, member))
            else:
                items.append((_OPEN, member))
                while chunk := member.content.read(CHUNK):
                    items.append((_DATA, chunk))
                    size += len(chunk)
                items.append((_CLOSE, None))
            if size >= BATCH_BYTES or len(items) >= BATCH_ITEMS:
                writer.put(items)
                items, size = [], 0
        writer.put(items)
    finally:
        writer.stop()
    if writer.error is not None:
        raise writer.error
    writer.tree.finish()
    return writer.tree.entries


class _Writer:
    """The thread that applies batches to the tree; its first error stops it."""

    def __init__(self, tree: _Tree) -> None:
        self.tree = tree
        self.queue: queue.Queue[list[_Item] | None] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="module-extract", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, items: list[_Item]) -> None:
        """Queue a batch; raises the writer's error if it has stopped on one."""
        if self.error is not None:
            raise self.error
        if items:
            self.queue.put(items)

    def stop(self) -> None:
        """Let the writer finish what is queued, and join it (`error` says how it ended)."""
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        tree = self.tree
        try:
            while (items := self.queue.get()) is not None:
                for kind, value in items:
                    if kind == _DATA:
                        tree.write(value)
                    elif kind == _OPEN:
                        tree.open(value)
                    elif kind == _CLOSE:
                        tree.close()
                    else:
                        tree.add(value)
        except BaseException as exc:
            self.error = exc
            while self.queue.get() is not None:  # the reader never blocks on a full queue
                pass
        finally:
            tree.abandon()


class _Tree:
    """The tree being written (by the writer thread only) and its entries."""

    def __init__(self, root: Path, *, as_root: bool) -> None:
        self.root = root
        self.as_root = as_root
        self.entries: list[dict[str, Any]] = []
        self.digests: dict[str, tuple[str, str]] = {}
        self.dirs: dict[str, LayerMember] = {}
        self._present: set[str] = set()  # parents already seen to exist: one lexists each
        self._implicit: list[str] = []  # parents the layer did not list, made here
        self._fd = -1
        self._file: tuple[LayerMember, FileDigests] | None = None

    def add(self, member: LayerMember) -> None:
        """A directory, symlink or hard link."""
        self._parents(member.path)
        target = os.path.join(self.root, member.path)
        entry = _entry(member)
        if member.type == layer_reader.DIR:
            if not os.path.isdir(target):
                os.mkdir(target, 0o700)
            self.dirs[member.path] = member
        elif member.type == layer_reader.SYMLINK:
            assert member.target is not None
            os.symlink(member.target, target)
            if self.as_root:
                os.lchown(target, member.uid, member.gid)
            os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
            entry["target"] = member.target
        elif member.type == layer_reader.HARDLINK:  # the same inode: its mode and owner
            assert member.target is not None
            os.link(os.path.join(self.root, member.target), target, follow_symlinks=False)
            source = os.lstat(target)
            entry |= {"type": layer_reader.FILE, "link": member.target, "size": source.st_size}
            entry |= {"mode": source.st_mode & 0o7777, "uid": source.st_uid, "gid": source.st_gid}
            digests = self.digests[member.path] = self.digests[member.target]
            entry["sha256"], entry["verity"] = digests
        else:  # a regular file without content: empty
            self.open(member)
            self.close()
            return
        self.entries.append(entry)

    def open(self, member: LayerMember) -> None:
        """Start a regular file."""
        self._parents(member.path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(os.path.join(self.root, member.path), flags, 0o600)
        self._file = (member, FileDigests())

    def write(self, data: bytes) -> None:
        """The next bytes of the file started last."""
        assert self._file is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._file[1].update(data)

    def close(self) -> None:
        """Finish the file started last: owner, mode and time, then its entry."""
        assert self._file is not None
        member, digests = self._file
        fd, self._fd, self._file = self._fd, -1, None
        try:
            if self.as_root:
                os.fchown(fd, member.uid, member.gid)  # before chmod: chown drops setid bits
            os.fchmod(fd, member.mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
        sha256, verity = self.digests[member.path] = digests.hexdigests()
        entry = _entry(member)
        entry |= {"size": digests.size, "sha256": sha256, "verity": verity}
        self.entries.append(entry)

    def abandon(self) -> None:
        """Close a file left open by an error."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd, self._file = -1, None

    def finish(self) -> None:
        """Apply directory metadata, deepest first (a read-only directory is filled by now).

        Directories the layer does not describe (the tree itself, implicit parents) get the
        newest mtime in the layer, so that the same layer always makes the same tree.
        """
        newest = max((e["mtime"] for e in self.entries), default=0)
        for target in [*self._implicit, str(self.root)]:
            os.utime(target, (newest, newest))
        for path in sorted(self.dirs, key=lambda p: p.count("/"), reverse=True):
            member = self.dirs[path]
            target = os.path.join(self.root, path)
            if self.as_root:
                os.lchown(target, member.uid, member.gid)
            os.chmod(target, member.mode)
            os.utime(target, (member.mtime, member.mtime))

    def _parents(self, path: str) -> None:
        """Directories the layer did not list (it may leave parents implicit): 0755."""
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = os.path.join(self.root, *parts[:i])
            if parent in self._present:
                continue
            if not os.path.lexists(parent):
                os.mkdir(parent, 0o755)
                self._implicit.append(parent)
            self._present.add(parent)


def _entry(member: LayerMember) -> dict[str, Any]:
    return {
        "path": member.path,
        "type": member.type,
        "mode": member.mode,
        "uid": member.uid,
        "gid": member.gid,
        "mtime": member.mtime,
    }
