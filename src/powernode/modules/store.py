"""Content-addressed store: each distinct file content is kept once, named by its sha256.

Layout under the data directory: `content/blobs/ab/abcdef...` (mode 0444). Writes go to a
temporary file in the same directory tree and are renamed into place, so a reader never sees a
partial blob and concurrent writers of the same content both succeed.

Materialization hard-links files out of the store. A hard link shares mode, owner and mtime
with its source, so for each (content, mode, uid, gid, mtime) a materialized tree needs, the
store keeps one inode under `content/inodes/`, a checked copy of the blob, and links every
materialization to it (`InodeLinker`). Blobs themselves are never linked into trees.

A hard link also shares the bytes: writing a file of a composed tree in place writes the store's
inode and every other tree linked to it. Read-only modes do not prevent that (root ignores
them, and entries keep their own modes, 0644 and all), fs-verity is missing on most
filesystems, and an immutable attribute forbids the links themselves. So the store checks an
inode before sharing it again: `content/inodes/stamps.sqlite` keeps, for each inode, its
(device, inode number, size, mode, owner, mtime, ctime) as last seen in a known-good state.
Any write, truncate, chmod, chown or utime changes the ctime (the kernel sets it; no system
call sets it back), and a write also moves the mtime away from the entry's, so an inode whose
stat differs from its stamp is not trusted: a fresh copy of the blob replaces it, and the trees
that already link the old one keep it. Linking itself changes the ctime, so the stamp is
refreshed from the new link right after each link, once its size, mode, owner and mtime are
seen unchanged (the one blind spot: a same-size write whose mtime is set back within those
microseconds). A stamp missing or lost (a store from before stamps, two materializations
saving at once) costs a copy, never a wrong file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO

from powernode.errors import Conflict, Invalid, NotFound

CHUNK = 1 << 20
STAMPS = "stamps.sqlite"
_DIGEST = re.compile("[0-9a-f]{64}")


def check_digest(sha256: str) -> str:
    """`sha256` if it is a lowercase hex sha256 digest (safe as a file name), else Invalid."""
    if not _DIGEST.fullmatch(sha256):
        raise Invalid(f"{sha256!r} is not a sha256 digest")
    return sha256


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.inodes = root / "inodes"

    def path(self, sha256: str) -> Path:
        return self.blobs / check_digest(sha256)[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def open(self, sha256: str) -> IO[bytes]:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError:
            raise NotFound(f"content {sha256} is not in the store") from None

    def put_stream(self, source: IO[bytes], *, expected: str | None = None) -> tuple[str, int]:
        """Store what `source` yields; returns (sha256, size)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.blobs, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    tmp.write(chunk)
                    size += len(chunk)
            sha = digest.hexdigest()
            if expected is not None and sha != expected:
                raise Invalid(f"content does not match its digest: expected {expected}, got {sha}")
            self._commit(Path(tmp_name), sha)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return sha, size

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has(sha):
            self.blobs.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self.blobs, prefix=".incoming-")
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
            self._commit(Path(tmp_name), sha)
        return sha

    def read_bytes(self, sha256: str) -> bytes:
        with self.open(sha256) as handle:
            return handle.read()

    def _commit(self, tmp: Path, sha: str) -> None:
        target = self.path(sha)
        if target.exists():
            tmp.unlink()
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)

    def copy_to(self, sha256: str, out: IO[bytes]) -> None:
        """Write the content of `sha256` to `out`, checking it on the way: a blob can be
        damaged after it was stored (an adopted build output is a hard link to a file outside
        the store), and a damaged blob must not become a file of a composed tree."""
        digest = hashlib.sha256()
        with self.open(sha256) as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise Invalid(
                f"content {sha256} is damaged in the store at {self.path(sha256)} (its bytes "
                f"hash to {digest.hexdigest()}); import the module again, or delete the blob "
                "so that it is fetched again"
            )

    def linker(self) -> InodeLinker:
        """Hard links to checked inodes, for one materialization (a context manager)."""
        return InodeLinker(self)

    def adopt(self, source: Path, sha256: str) -> bool:
        """Take `source` into the store by hard link, without copying its bytes (large build
        outputs on the control plane's own machine). Its content is hashed first: a file that
        does not match `sha256` is refused. False when `source` is on another filesystem."""
        if self.has(sha256):
            return True
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mktemp(dir=self.blobs, prefix=".adopting-"))  # noqa: S306 - link target
        try:
            os.link(source, tmp)
        except OSError:
            return False
        try:
            digest = hashlib.sha256()
            with tmp.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != sha256:
                raise Invalid(f"{source} does not match its digest: expected {sha256}")
            self._commit(tmp, sha256)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return True

    def missing(self, digests: Iterable[str]) -> list[str]:
        return sorted({d for d in digests if not self.has(d)})


_Stamp = tuple[int, int, int, int, int, int, int, int]
"""(device, inode, size, mode, uid, gid, mtime_ns, ctime_ns) of an inode in a known state."""


def _stamp(st: os.stat_result) -> _Stamp:
    return (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def _same_inode_and_data(before: os.stat_result, after: os.stat_result) -> bool:
    """Whether a link left the inode as it was: the link itself changes ctime and nlink."""
    return _stamp(before)[:7] == _stamp(after)[:7]


class InodeLinker:
    """Hard links to store inodes carrying an entry's content and metadata, each checked
    against its stamp before it is shared (see the module docstring).

    One per materialization, used from one thread. Stamps are read from the database as
    needed and written back in one short transaction on close, so concurrent
    materializations never wait on each other for long; the last to save wins, and an
    older stamp only makes the next one copy that inode again.
    """

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self.renewed = 0
        """Inodes made afresh: missing, changed since their stamp, or out of links."""
        self._inodes = str(store.inodes)
        self._db: sqlite3.Connection | None = None
        self._seen: dict[str, _Stamp] = {}

    def __enter__(self) -> InodeLinker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def link(self, sha256: str, mode: int, uid: int, gid: int, mtime: int, target: Path) -> None:
        """Make `target` a hard link to an inode with this content, mode, owner and mtime.

        OSError as from os.link when the link cannot be made (another filesystem, say); the
        caller copies instead. Invalid when the blob is damaged.
        """
        name = f"{check_digest(sha256)}-{mode:o}-{uid}-{gid}-{mtime}"
        inode = os.path.join(self._inodes, sha256[:2], name)  # str: cheaper than Path, per file
        for _ in range(3):
            before = self._trusted(name, inode, mtime)
            if before is None:
                before = self._renew(inode, sha256, mode, uid, gid, mtime)
            try:
                os.link(inode, target)
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    raise
                # As many links as the filesystem allows: later trees get a new inode, the
                # trees linked so far keep the old one.
                self._seen.pop(name, None)
                self._renew(inode, sha256, mode, uid, gid, mtime)
                continue
            after = os.lstat(target)
            if _same_inode_and_data(before, after):
                self._seen[name] = _stamp(after)
                return
            # Changed between the check and the link (written through another tree, or
            # replaced by another materialization): this link cannot be trusted either.
            target.unlink()
            self._seen.pop(name, None)
        raise Conflict(
            f"store inode {inode} kept changing while it was being linked; stop what writes "
            "to composed trees and compose again"
        )

    def close(self) -> None:
        """Save the stamps of the inodes linked."""
        if not self._seen:
            if self._db is not None:
                self._db.close()
                self._db = None
            return
        db = self._connect()
        try:
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO stamps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(name, *stamp) for name, stamp in self._seen.items()],
                )
        finally:
            db.close()
            self._db = None
            self._seen.clear()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.store.inodes.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.store.inodes / STAMPS, timeout=60)
            db.execute(
                "CREATE TABLE IF NOT EXISTS stamps (name TEXT PRIMARY KEY, dev INTEGER, "
                "ino INTEGER, size INTEGER, mode INTEGER, uid INTEGER, gid INTEGER, "
                "mtime_ns INTEGER, ctime_ns INTEGER) WITHOUT ROWID"
            )
            db.commit()
            self._db = db
        return self._db

    def _trusted(self, name: str, inode: str, mtime: int) -> os.stat_result | None:
        """The inode's stat if it is unchanged since its stamp, else None."""
        try:
            st = os.lstat(inode)
        except FileNotFoundError:
            return None
        stamp = self._seen.get(name)
        if stamp is None:
            row = (
                self._connect()
                .execute(
                    "SELECT dev, ino, size, mode, uid, gid, mtime_ns, ctime_ns FROM stamps "
                    "WHERE name = ?",
                    (name,),
                )
                .fetchone()
            )
            stamp = tuple(row) if row is not None else None
        # The mtime check backs up ctime's coarse clock: a write in the same tick as the
        # stamp leaves ctime equal, but moves the mtime off the entry's.
        if (
            stamp is None
            or _stamp(st) != stamp
            or not stat.S_ISREG(st.st_mode)
            or st.st_mtime_ns != mtime * 1_000_000_000
        ):
            return None
        return st

    def _renew(
        self, inode: str, sha256: str, mode: int, uid: int, gid: int, mtime: int
    ) -> os.stat_result:
        """A fresh copy of the blob at `inode` with this metadata; its stat."""
        directory = os.path.dirname(inode)
        os.makedirs(directory, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                self.store.copy_to(sha256, out)
            if os.geteuid() == 0:
                os.chown(tmp_name, uid, gid)
            os.chmod(tmp_name, mode)
            os.utime(tmp_name, (mtime, mtime))
            made = os.lstat(tmp_name)
            os.replace(tmp_name, inode)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        self.renewed += 1
        return made
