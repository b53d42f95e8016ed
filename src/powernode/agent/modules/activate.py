"""Make a new generation's root from its verified module trees, then seal and record it.

The root is the union of the trees in module order, the last module on top, as overlayfs
defines it: an upper file, symlink or directory hides a lower non-directory; an upper file or
symlink hides a lower directory and all of it; directories present in consecutive layers merge,
and a merged directory shows the metadata of its topmost copy.

- Overlay (preferred): a read-only overlay mount of the trees on `root` (no upper layer). Tried
  when enabled and the agent is root; any mount failure (EPERM in a container, no overlay
  support) falls back to:
- Materialized: the same union built as a real tree of hard links to the trees' files (copies
  where the filesystem refuses links), so it costs no second copy of the data.

Sealing: fs-verity is enabled on every file of every tree (so on the materialized root's links
too) and the kernel's digest compared with the one computed while verifying. Where the
filesystem lacks fs-verity the generation records `verity: unsupported`.

After a reboot an overlay root is no longer mounted: `ensure_mounted` mounts it again (or
materializes it, if mounting is no longer possible) before anything else touches generations.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from powernode.agent.modules import fsverity, mounts
from powernode.agent.modules.errors import ActivationFailed
from powernode.agent.modules.generations import (
    ENABLED,
    MATERIALIZED,
    OVERLAY,
    UNSUPPORTED,
    Generation,
    Generations,
)
from powernode.agent.modules.verify import VerifiedModule


@dataclass(frozen=True)
class ActivationOptions:
    """How roots are made on this node."""

    overlay: bool = True
    """Try a read-only overlay mount first (needs root and a kernel that allows it)."""


def seal(generation_dir: Path, modules: Sequence[VerifiedModule]) -> str:
    """Enable fs-verity on every module file: ENABLED, or UNSUPPORTED by the filesystem."""
    problem = fsverity.probe(generation_dir)
    if problem is not None:
        if problem.unsupported:
            return UNSUPPORTED
        raise ActivationFailed(None, f"cannot enable fs-verity: {problem}")
    for module in modules:
        for entry in module.files:
            path = module.tree / entry["path"]
            try:
                fsverity.enable(path)
                measured = fsverity.measure(path)
            except fsverity.VerityError as exc:
                raise ActivationFailed(module.request.name, str(exc)) from exc
            if measured != entry["verity"]:
                raise ActivationFailed(
                    module.request.name,
                    f"{entry['path']}: the kernel measures {measured}, "
                    f"verification computed {entry['verity']}",
                )
    return ENABLED


def make_root(generation: Generation, options: ActivationOptions) -> Generation:
    """Build `generation.root` (overlay, else materialized); the generation as built."""
    why = mounts.can_mount() if options.overlay else "overlay mounts are disabled on this node"
    if why is None:
        try:
            mounts.mount_overlay(generation.layers, generation.root)
            return replace(generation, mode=OVERLAY, mount_error=None)
        except mounts.MountError as exc:
            why = str(exc)
    try:
        materialize(list(reversed(generation.layers)), generation.root)
    except OSError as exc:
        raise ActivationFailed(None, f"cannot materialize {generation.root}: {exc}") from exc
    return replace(generation, mode=MATERIALIZED, mount_error=why)


def ensure_mounted(generations: Generations, options: ActivationOptions) -> None:
    """Mount the current generation's overlay again if it is not (after a reboot)."""
    current = generations.current()
    if current is not None:
        remount(generations, current, options)


def remount(
    generations: Generations, generation: Generation, options: ActivationOptions
) -> Generation:
    """`generation` with its root present: an unmounted overlay root is mounted again (or
    materialized, when mounting is no longer possible) and the record updated."""
    if generation.mode != OVERLAY or mounts.is_mounted(generation.root):
        return generation
    leftovers = sorted(p.name for p in generation.root.iterdir())
    if leftovers:  # an unmounted mount point holds nothing
        raise ActivationFailed(None, f"{generation.root} is not mounted but holds {leftovers}")
    rebuilt = make_root(generation, options)
    if rebuilt != generation:
        generations.commit(rebuilt)
    return rebuilt


def materialize(layers: Sequence[Path], root: Path) -> None:
    """The union of `layers` (bottom first) as a real tree at the empty directory `root`."""
    as_root = os.geteuid() == 0
    metadata: dict[str, os.stat_result] = {}
    for layer in layers:
        _merge(str(layer), str(root), metadata)
    for path in sorted(metadata, key=lambda p: p.count("/"), reverse=True):
        if not os.path.isdir(path) or os.path.islink(path):
            continue  # replaced by a higher layer's file
        info = metadata[path]
        if as_root:
            os.lchown(path, info.st_uid, info.st_gid)
        os.chmod(path, stat.S_IMODE(info.st_mode))
        os.utime(path, ns=(info.st_mtime_ns, info.st_mtime_ns))


def _merge(source: str, target: str, metadata: dict[str, os.stat_result]) -> None:
    with os.scandir(source) as found:
        entries = sorted(found, key=lambda e: e.name)
    for entry in entries:
        below = os.path.join(target, entry.name)
        info = entry.stat(follow_symlinks=False)
        existing = _lstat(below)
        if stat.S_ISDIR(info.st_mode):
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                _remove(below, existing)
                os.mkdir(below, 0o700)
            metadata[below] = info
            _merge(entry.path, below, metadata)
            continue
        _remove(below, existing)
        try:
            os.link(entry.path, below, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            _copy(entry.path, below, info)


def _copy(source: str, target: str, info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
    else:
        shutil.copyfile(source, target, follow_symlinks=False)
        os.chmod(target, stat.S_IMODE(info.st_mode))
    if os.geteuid() == 0:
        os.lchown(target, info.st_uid, info.st_gid)
    os.utime(target, ns=(info.st_mtime_ns, info.st_mtime_ns), follow_symlinks=False)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _remove(path: str, existing: os.stat_result | None) -> None:
    if existing is None:
        return
    if stat.S_ISDIR(existing.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
