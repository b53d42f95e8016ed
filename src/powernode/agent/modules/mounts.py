"""Read-only overlayfs and EROFS mounts with the real `mount(8)`, `umount(8)`, `mkfs.erofs`.

A generation's root is mounted `-t overlay -o ro,lowerdir=TOP:...:BOTTOM` (no upper layer, so
nothing can write to it); its layers are directories the agent made itself, or the mounts of
EROFS images built from them. Paths that mount's option syntax cannot carry (`,` `:` `\\` or
whitespace) are refused before mount is run.

EROFS images are reproducible: `mkfs.erofs` (erofs-utils 1.5, Debian bookworm) gets a UUID
derived from what the image holds and `SOURCE_DATE_EPOCH` set to the tree's newest mtime. 1.5
takes that for the build time and clamps only later mtimes to it, so every file keeps its own
mtime (its `-T` would set all of them to one value). Extended attributes are left out (`-x-1`):
the trees carry none. Images are loop-mounted read-only; mount(8) sets the loop device to
detach itself when the image is unmounted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

MOUNT_TIMEOUT_S = 60
MKFS_TIMEOUT_S = 3600
MKFS_EROFS = "mkfs.erofs"
_UUID_NAMESPACE = uuid.UUID("5d6c1f0e-7a43-4b8e-9a51-0b7f3c2e9d14")
_UNSAFE = frozenset(",:\\ \t\n")


class MountError(Exception):
    """mount or umount failed; the message is the tool's own words."""


def can_mount() -> str | None:
    """None when overlay mounts may be tried here, else why not."""
    if os.geteuid() != 0:
        return "the agent is not root"
    if shutil.which("mount") is None:
        return "mount(8) is not installed"
    return None


def mount_overlay(layers: Sequence[Path], target: Path) -> None:
    """Mount `layers` (topmost first) read-only on `target`; MountError on failure."""
    unsafe = [str(p) for p in (*layers, target) if _UNSAFE & set(str(p))]
    if unsafe:
        raise MountError(f"mount options cannot carry the path {unsafe[0]!r}")
    options = "ro,lowerdir=" + ":".join(str(layer) for layer in layers)
    _run("mount", "-t", "overlay", "-o", options, "powernode-modules", str(target))


def build_erofs(
    tree: Path, image: Path, *, identity: str, epoch: int, tool: str = MKFS_EROFS
) -> None:
    """Build the EROFS image `image` of `tree` (see the module docstring); MountError if not.

    `identity` names what the tree holds (the same for the same content: a digest); the UUID
    is derived from it. `epoch` is the build time: no earlier than any mtime in the tree.
    """
    uid = uuid.uuid5(_UUID_NAMESPACE, identity)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    env |= {"LC_ALL": "C", "SOURCE_DATE_EPOCH": str(epoch)}
    args = ("--quiet", "-x-1", f"-U{uid}", str(image), str(tree))
    _run(tool, *args, env=env, what="mkfs.erofs", timeout=MKFS_TIMEOUT_S)


def mount_erofs(image: Path, target: Path) -> None:
    """Loop-mount the EROFS image `image` read-only on `target`; MountError on failure."""
    unsafe = [str(p) for p in (image, target) if _UNSAFE & set(str(p))]
    if unsafe:
        raise MountError(f"mount options cannot carry the path {unsafe[0]!r}")
    _run("mount", "-t", "erofs", "-o", "ro,loop,nodev,nosuid", str(image), str(target))


def unmount(target: Path) -> None:
    """Unmount `target` if something is mounted there; MountError if that fails."""
    if is_mounted(target):
        _run("umount", str(target))


def is_mounted(target: Path) -> bool:
    """Whether `target` is a mount point."""
    return os.path.ismount(target)


def _run(
    tool: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    timeout: float = MOUNT_TIMEOUT_S,
) -> None:
    what = what or tool
    binary = shutil.which(tool)
    if binary is None:
        raise MountError(f"{tool} is not installed")
    try:
        proc = subprocess.run(  # noqa: S603 - a tool we name, our own paths, no shell
            [binary, *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MountError(f"{what} did not run: {exc}") from exc
    if proc.returncode != 0:
        words = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise MountError(f"{what} failed: {words}")
