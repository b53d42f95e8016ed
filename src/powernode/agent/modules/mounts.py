"""Read-only overlayfs mounts with the real `mount(8)` and `umount(8)`.

A generation's root is mounted `-t overlay -o ro,lowerdir=TOP:...:BOTTOM` (no upper layer, so
nothing can write to it); its layers are directories the agent made itself. Paths that mount's
option syntax cannot carry (`,` `:` `\\` or whitespace) are refused before mount is run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

MOUNT_TIMEOUT_S = 60
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


def unmount(target: Path) -> None:
    """Unmount `target` if something is mounted there; MountError if that fails."""
    if is_mounted(target):
        _run("umount", str(target))


def is_mounted(target: Path) -> bool:
    """Whether `target` is a mount point."""
    return os.path.ismount(target)


def _run(tool: str, *args: str) -> None:
    binary = shutil.which(tool)
    if binary is None:
        raise MountError(f"{tool}(8) is not installed")
    try:
        proc = subprocess.run(  # noqa: S603 - fixed tool, our own paths, no shell
            [binary, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=MOUNT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MountError(f"{tool} did not run: {exc}") from exc
    if proc.returncode != 0:
        words = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise MountError(f"{tool} failed: {words}")
