"""Writing a composed tree to a directory, equal to its manifest.

Files are hard links to inodes in the content store that carry the entry's mode, owner and
mtime (see `store.ContentStore.inode`), or copies where the target is on another filesystem.
Directories get their metadata last, deepest first, so a read-only directory does not block
writing into it. A path under a symlink entry would be written through the link, possibly
outside the root: such a tree is refused before anything is written.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import Conflict, Invalid
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry, check_path, parents
from powernode.modules.store import ContentStore


@dataclass(frozen=True)
class Materialized:
    files_linked: int
    files_copied: int
    directories: int
    symlinks: int
    ownership_applied: bool


def check_escapes(entries: list[Entry]) -> None:
    """Invalid when a path would be written through a symlink entry."""
    links = {e.path for e in entries if e.type == SYMLINK}
    for entry in entries:
        check_path(entry.path)
        for parent in parents(entry.path):
            if parent in links:
                raise Invalid(
                    f"{entry.path} lies under the symlink {parent}; writing it would follow the "
                    "link and could escape the root"
                )


def materialize(entries: list[Entry], store: ContentStore, out: Path) -> Materialized:
    """Write `entries` under `out`, which must be missing or empty."""
    check_escapes(entries)
    if out.exists() and any(out.iterdir()):
        raise Conflict(f"{out} is not empty; compose into a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    linked = copied = symlinks = 0
    directories = [e for e in entries if e.type == DIR]
    for entry in directories:
        (out / entry.path).mkdir(parents=True, exist_ok=True)
    for entry in entries:
        target = out / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.type == FILE:
            assert entry.sha256 is not None
            if _link_or_copy(store, entry, target, as_root):
                linked += 1
            else:
                copied += 1
        elif entry.type == SYMLINK:
            assert entry.target is not None
            os.symlink(entry.target, target)
            if as_root:
                os.lchown(target, entry.uid, entry.gid)
            os.utime(target, (entry.mtime, entry.mtime), follow_symlinks=False)
            symlinks += 1
    for entry in sorted(directories, key=lambda e: e.path.count("/"), reverse=True):
        target = out / entry.path
        if as_root:
            os.chown(target, entry.uid, entry.gid)
        os.chmod(target, entry.mode)
        os.utime(target, (entry.mtime, entry.mtime))
    return Materialized(linked, copied, len(directories), symlinks, as_root)


def _link_or_copy(store: ContentStore, entry: Entry, target: Path, as_root: bool) -> bool:
    """Hard-link the entry's inode into place (True), or copy it (False)."""
    assert entry.sha256 is not None
    owner_ok = as_root or (entry.uid, entry.gid) == (os.geteuid(), os.getegid())
    if owner_ok:
        inode = store.inode(entry.sha256, entry.mode, entry.uid, entry.gid, entry.mtime)
        try:
            os.link(inode, target)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
    with store.open(entry.sha256) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if as_root:
        os.chown(target, entry.uid, entry.gid)
    os.chmod(target, entry.mode)
    os.utime(target, (entry.mtime, entry.mtime))
    return False
