"""Writing a composed tree to a directory, equal to its manifest.

Files are hard links to inodes in the content store that carry the entry's mode, owner and
mtime, checked before each link so that a tree edited in place cannot leak into later ones
(see `store.InodeLinker`), or checked copies where the target is on another filesystem.
Composed trees therefore share inodes with each other: edit a file of one by replacing it
(write a new file, rename it over), or copy the tree first.

The manifest is checked before anything is written: safe relative paths, each once, every
parent a directory entry. A path under a symlink would be written through the link, possibly
outside the root; a path under a file, or with no parent entry, means the manifest is not a
tree. Directories get their metadata last, deepest first, so a read-only directory does not
block writing into it.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import Conflict, Invalid
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry, check_path
from powernode.modules.store import ContentStore, InodeLinker


@dataclass(frozen=True)
class Materialized:
    files_linked: int
    files_copied: int
    directories: int
    symlinks: int
    ownership_applied: bool


def check_manifest(entries: list[Entry]) -> None:
    """Invalid unless `entries` is a tree that can be written as it is."""
    types: dict[str, str] = {}
    for entry in entries:
        check_path(entry.path)
        if entry.path in types:
            raise Invalid(f"{entry.path} appears twice in the manifest")
        if entry.type not in (DIR, FILE, SYMLINK):
            raise Invalid(f"{entry.path} has unknown type {entry.type!r}")
        if entry.type == FILE and entry.sha256 is None:
            raise Invalid(f"{entry.path} is a file without a sha256")
        if entry.type == SYMLINK and entry.target is None:
            raise Invalid(f"{entry.path} is a symlink without a target")
        types[entry.path] = entry.type
    # Each parent being a directory entry makes every ancestor one, by induction.
    for entry in entries:
        parent = entry.path.rpartition("/")[0]
        kind = types.get(parent) if parent else DIR
        if kind == DIR:
            continue
        if kind is None:
            raise Invalid(f"{entry.path}: its parent {parent} is not in the manifest")
        if kind == SYMLINK:
            raise Invalid(
                f"{entry.path} lies under the symlink {parent}; writing it would follow the "
                "link and could escape the root"
            )
        raise Invalid(f"{entry.path} lies under {parent}, which is a {kind}, not a directory")


def materialize(entries: list[Entry], store: ContentStore, out: Path) -> Materialized:
    """Write `entries` under `out`, which must be missing or empty."""
    check_manifest(entries)
    if out.exists() and any(out.iterdir()):
        raise Conflict(f"{out} is not empty; compose into a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    linked = copied = symlinks = 0
    directories = [e for e in entries if e.type == DIR]
    for entry in directories:
        (out / entry.path).mkdir(parents=True, exist_ok=True)
    with store.linker() as links:
        for entry in entries:
            target = out / entry.path
            if entry.type == FILE:
                if _link_or_copy(store, links, entry, target, as_root):
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


def _link_or_copy(
    store: ContentStore, links: InodeLinker, entry: Entry, target: Path, as_root: bool
) -> bool:
    """Hard-link the entry's inode into place (True), or copy it (False)."""
    assert entry.sha256 is not None
    owner_ok = as_root or (entry.uid, entry.gid) == (os.geteuid(), os.getegid())
    if owner_ok:
        try:
            links.link(entry.sha256, entry.mode, entry.uid, entry.gid, entry.mtime, target)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM):
                raise
    with target.open("wb") as dst:
        store.copy_to(entry.sha256, dst)
    if as_root:
        os.chown(target, entry.uid, entry.gid)
    os.chmod(target, entry.mode)
    os.utime(target, (entry.mtime, entry.mtime))
    return False
