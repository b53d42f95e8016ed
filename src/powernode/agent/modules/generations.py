"""Generations of the active module root, under `<state>/modules/`.

    modules/
      .lock                     flock(2): one apply (or rollback) at a time
      staging/<random>/         pulls in progress; removed when the apply ends
      generations/<n>/
        trees/<ii>-<name>/      a verified module tree (an overlay lower layer)
        trees/<ii>-<name>.json  what was verified in it: every entry with its digests
        images/<ii>-<name>.erofs  the tree as an EROFS image (EROFS lowers only)
        lowers/<ii>-<name>/     where that image is mounted read-only (EROFS lowers only)
        base/                   an empty bottom layer (overlay wants two layers)
        root/                   the merged root: an overlay mount point, or a materialized tree
        generation.json         written last: a generation without it is incomplete
      current -> generations/<n>

The active root is `modules/current/root`. `current` is switched atomically (a new symlink
renamed over it), so a reader sees the old generation or the new one, never a mix. Only the
current generation and the one before it are kept (`prune`); incomplete generations and staging
directories left by a crash are removed by `recover`. A generation is deleted only once its root
and then its EROFS lowers are unmounted; one that stays mounted is kept.

Concurrency: every change happens under `lock()`; readers need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from powernode.agent.fsutil import atomic_write, fsync_dir
from powernode.agent.modules import mounts
from powernode.agent.modules.errors import Busy

log = logging.getLogger(__name__)

RECORD = "generation.json"
RECORD_VERSION = 1
KEEP = 2
OVERLAY, MATERIALIZED = "overlay", "materialized"
EROFS, DIRECTORIES = "erofs", "directories"
ENABLED, UNSUPPORTED = "enabled", "unsupported"


@dataclass(frozen=True)
class ModuleRecord:
    """One module of a generation: what was asked for, and where its verified tree is."""

    name: str
    version: str
    digest: str
    tree: str
    """The tree's directory, relative to the generation."""


@dataclass(frozen=True)
class Generation:
    """A complete generation as its `generation.json` describes it."""

    number: int
    path: Path
    modules: tuple[ModuleRecord, ...]
    mode: str
    """OVERLAY (root is a read-only overlay mount) or MATERIALIZED (root is a real tree)."""
    verity: str
    """ENABLED (fs-verity is on for every file) or UNSUPPORTED (the filesystem has none)."""
    mount_error: str | None = None
    """Why the root is materialized when an overlay was wanted."""
    lowers: str | None = None
    """An overlay's lower layers: EROFS (mounted images of the trees) or DIRECTORIES (the trees
    themselves); None for a materialized root."""
    erofs_error: str | None = None
    """Why an overlay's lowers are directories when EROFS images were wanted."""

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def trees(self) -> list[Path]:
        """The module trees, topmost (last module) first, then the empty base."""
        return [self.path / m.tree for m in reversed(self.modules)] + [self.path / "base"]

    @property
    def images(self) -> list[tuple[ModuleRecord, Path, Path]]:
        """Each module (bottom first) with its EROFS image and that image's mount point."""
        found = []
        for module in self.modules:
            name = Path(module.tree).name
            found.append(
                (module, self.path / "images" / f"{name}.erofs", self.path / "lowers" / name)
            )
        return found

    @property
    def lower_dirs(self) -> list[Path]:
        """The overlay's lower layers, topmost first: the images' mounts (EROFS) or the trees."""
        if self.lowers != EROFS:
            return self.trees
        return [mount for _, _, mount in reversed(self.images)] + [self.path / "base"]

    @property
    def active(self) -> dict[str, str]:
        """Module name -> manifest digest."""
        return {m.name: m.digest for m in self.modules}

    def document(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "generation": self.number,
            "modules": [asdict(m) for m in self.modules],
            "mode": self.mode,
            "verity": self.verity,
            "mount_error": self.mount_error,
            "lowers": self.lowers,
            "erofs_error": self.erofs_error,
        }


class Generations:
    """The `modules` directory of one agent state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.base = state_dir / "modules"
        self.generations = self.base / "generations"
        self.staging = self.base / "staging"
        self.current_link = self.base / "current"
        self.active_root = self.current_link / "root"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the modules directory; Busy if another apply holds it."""
        for directory in (self.base, self.generations, self.staging):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.base / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(None, "another apply_modules is running on this node") from None
            yield
        finally:
            os.close(fd)

    # reading

    def current(self) -> Generation | None:
        """The active generation, or None when no modules were ever activated."""
        number = self.current_number()
        return self.load(number) if number is not None else None

    def current_number(self) -> int | None:
        """The number `current` points to, whether or not that generation reads back."""
        try:
            name = Path(os.readlink(self.current_link)).name
        except FileNotFoundError:
            return None
        return int(name) if name.isdigit() else None

    def load(self, number: int) -> Generation | None:
        """Generation `number` if it is complete, else None."""
        path = self.generations / str(number)
        try:
            doc = json.loads((path / RECORD).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION:
            return None
        modules = tuple(ModuleRecord(**m) for m in doc["modules"])
        return Generation(
            number,
            path,
            modules,
            doc["mode"],
            doc["verity"],
            doc.get("mount_error"),
            doc.get("lowers", DIRECTORIES if doc["mode"] == OVERLAY else None),
            doc.get("erofs_error"),
        )

    def numbers(self) -> list[int]:
        """Every generation directory's number, complete or not, ascending."""
        if not self.generations.is_dir():
            return []
        return sorted(int(p.name) for p in self.generations.iterdir() if p.name.isdigit())

    def previous(self, number: int) -> Generation | None:
        """The newest complete generation older than `number`."""
        for older in reversed([n for n in self.numbers() if n < number]):
            found = self.load(older)
            if found is not None:
                return found
        return None

    # changing (under lock)

    def new_staging(self) -> Path:
        """A fresh staging directory."""
        path = self.staging / secrets.token_hex(8)
        path.mkdir(mode=0o700)
        return path

    def new(self) -> tuple[int, Path]:
        """A fresh, empty generation directory numbered after every existing one."""
        number = max(self.numbers(), default=0) + 1
        path = self.generations / str(number)
        path.mkdir(mode=0o755)
        for part in ("trees", "base", "root"):
            (path / part).mkdir(mode=0o755)
        return number, path

    def commit(self, generation: Generation) -> None:
        """Write the record that makes a generation complete."""
        data = json.dumps(generation.document(), indent=2).encode() + b"\n"
        atomic_write(generation.path / RECORD, data, 0o644)

    def switch(self, generation: Generation | None) -> None:
        """Make `generation` the active one (None: no active root) atomically."""
        if generation is None:
            with contextlib.suppress(FileNotFoundError):
                self.current_link.unlink()
        else:
            tmp = self.base / f".current.{secrets.token_hex(6)}"
            os.symlink(f"generations/{generation.number}", tmp)
            try:
                os.replace(tmp, self.current_link)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        fsync_dir(self.base)

    def remove(self, path: Path) -> bool:
        """Unmount (root, then EROFS lowers) and delete a generation directory; False (and
        kept) if anything stays mounted."""
        for mount_point in [path / "root", *lower_mounts(path)]:
            try:
                mounts.unmount(mount_point)
            except mounts.MountError as exc:
                log.warning("cannot unmount %s; keeping %s: %s", mount_point, path, exc)
                return False
            if mounts.is_mounted(mount_point):
                return False
        remove_tree(path)
        return True

    def prune(self) -> list[int]:
        """Remove every generation but the current one and the one before it; their numbers."""
        current = self.current()
        if current is None:
            return []
        keep = {current.number}
        previous = self.previous(current.number)
        if previous is not None:
            keep.add(previous.number)
        removed = []
        for number in self.numbers():
            if number not in keep and self.remove(self.generations / str(number)):
                removed.append(number)
        return removed

    def recover(self) -> None:
        """Drop what a crash left: staging, and incomplete generations or ones never activated."""
        for leftover in self.staging.iterdir() if self.staging.is_dir() else ():
            remove_tree(leftover)
        current = self.current_number()
        for number in self.numbers():
            if number == current:
                continue  # even if its record is damaged: it is what is active
            if current is None or number > current or self.load(number) is None:
                self.remove(self.generations / str(number))

    def release(self) -> None:
        """Unmount every generation's root and EROFS lowers (uninstall, tests); nothing is
        deleted."""
        for number in self.numbers():
            path = self.generations / str(number)
            for mount_point in [path / "root", *lower_mounts(path)]:
                with contextlib.suppress(mounts.MountError):
                    mounts.unmount(mount_point)


def lower_mounts(path: Path) -> list[Path]:
    """The EROFS mount points of the generation at `path` (mounted or not)."""
    lowers = path / "lowers"
    if not lowers.is_dir():
        return []
    return sorted(p for p in lowers.iterdir() if p.is_dir() and not p.is_symlink())


def remove_tree(path: Path) -> None:
    """Delete a tree the agent made; read-only directories in it do not stop a non-root agent."""
    if not path.exists():
        return
    if os.geteuid() != 0:
        with contextlib.suppress(OSError):
            _open_up(str(path))
    shutil.rmtree(path)


def _open_up(directory: str) -> None:
    os.chmod(directory, 0o700)
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _open_up(entry.path)
