"""Make a new generation's root from its verified module trees, then seal and record it.

The root is the union of the trees in module order, the last module on top, as overlayfs
defines it: an upper file, symlink or directory hides a lower non-directory; an upper file or
symlink hides a lower directory and all of it; directories present in consecutive layers merge,
and a merged directory shows the metadata of its topmost copy.

- Overlay (preferred): a read-only overlay mount on `root` (no upper layer). Tried when enabled
  and the agent is root. Its lower layers are, where `mkfs.erofs` is installed and the kernel
  mounts EROFS, each tree built into a reproducible EROFS image (`images/`, built once and kept
  for remounts) and loop-mounted read-only (`lowers/`): a read-only filesystem per module,
  whatever the trees' filesystem (uncompressed: it costs a second copy of the module's bytes on
  disk, and its build writes them once more). Any failure there (no tool, no EROFS in the kernel, a
  mount refused) falls back to the trees themselves as lower directories; the generation
  records which (`lowers`) and why (`erofs_error`). Any overlay mount failure (EPERM in a
  container, no overlay support) falls back to:
- Materialized: the same union built as a real tree of hard links to the trees' files (copies
  where the filesystem refuses links), so it costs no second copy of the data.

Sealing: fs-verity is enabled on every file of every tree (so on the materialized root's links
too) and the kernel's digest compared with the one computed while verifying, and then on the
EROFS images built from them. Where the filesystem lacks fs-verity the generation records
`verity: unsupported`.

After a reboot an overlay root is no longer mounted: `ensure_mounted` mounts it again (its kept
EROFS images first; or materializes it, if mounting is no longer possible) before anything else
touches generations.
"""

from __future__ import annotations

import contextlib
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
    DIRECTORIES,
    ENABLED,
    EROFS,
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
    erofs: bool = True
    """Make the overlay's lower layers mounted EROFS images of the trees, where possible."""
    mkfs_erofs: str = mounts.MKFS_EROFS
    """The `mkfs.erofs` to run (a name on PATH or a path)."""


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
        erofs_error: str | None = "EROFS lowers are disabled on this node"
        if options.erofs:
            erofs_error = mount_images(generation, options.mkfs_erofs)
        if erofs_error is None:
            try:
                built = replace(generation, lowers=EROFS, erofs_error=None)
                mounts.mount_overlay(built.lower_dirs, built.root)
                return replace(built, mode=OVERLAY, mount_error=None)
            except mounts.MountError as exc:
                erofs_error = f"overlay over the EROFS mounts: {exc}"
                unmount_images(generation)
        try:
            built = replace(generation, lowers=DIRECTORIES, erofs_error=erofs_error)
            mounts.mount_overlay(built.lower_dirs, built.root)
            return replace(built, mode=OVERLAY, mount_error=None)
        except mounts.MountError as exc:
            why = str(exc)
    try:
        materialize(list(reversed(generation.trees)), generation.root)
    except OSError as exc:
        raise ActivationFailed(None, f"cannot materialize {generation.root}: {exc}") from exc
    return replace(generation, mode=MATERIALIZED, mount_error=why, lowers=None, erofs_error=None)


def mount_images(generation: Generation, tool: str = mounts.MKFS_EROFS) -> str | None:
    """Mount every tree's EROFS image (built first where missing); None, or why not (and then
    nothing of it stays mounted). Where the trees are sealed with fs-verity the images are too,
    so the kernel checks every page the loop device reads."""
    try:
        for module, image, mount_point in generation.images:
            if not image.exists():
                build_image(generation.path / module.tree, image, module.digest, tool)
            if generation.verity == ENABLED:
                fsverity.enable(image)
            mount_point.mkdir(mode=0o755, parents=True, exist_ok=True)
            if not mounts.is_mounted(mount_point):
                mounts.mount_erofs(image, mount_point)
    except (mounts.MountError, fsverity.VerityError, OSError) as exc:
        unmount_images(generation)
        return str(exc)
    return None


def unmount_images(generation: Generation) -> None:
    """Unmount whatever of the generation's EROFS images is mounted (best effort)."""
    for _, _, mount_point in reversed(generation.images):
        with contextlib.suppress(mounts.MountError):
            mounts.unmount(mount_point)


def build_image(tree: Path, image: Path, identity: str, tool: str = mounts.MKFS_EROFS) -> None:
    """The EROFS image of `tree` at `image`, complete or absent (built aside, then renamed)."""
    image.parent.mkdir(mode=0o755, exist_ok=True)
    partial = image.with_name(image.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        mounts.build_erofs(tree, partial, identity=identity, epoch=newest_mtime(tree), tool=tool)
        os.chmod(partial, 0o444)
        os.replace(partial, image)
    finally:
        partial.unlink(missing_ok=True)


def newest_mtime(tree: Path) -> int:
    """The newest mtime (whole seconds) of anything in `tree`, itself included."""
    newest = int(os.lstat(tree).st_mtime)
    for directory, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            newest = max(newest, int(os.lstat(os.path.join(directory, name)).st_mtime))
    return newest


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
