"""Content-addressed store: each distinct file content is kept once, named by its sha256.

Layout under the data directory: `content/blobs/ab/abcdef...` (mode 0444). Writes go to a
temporary file in the same directory tree and are renamed into place, so a reader never sees a
partial blob and concurrent writers of the same content both succeed.

Materialization hard-links files out of the store. A hard link shares mode, owner and mtime
with its source, so for each (content, mode, uid, gid, mtime) a materialized tree needs, the
store keeps one inode under `content/inodes/` and links every materialization to it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from powernode.errors import Invalid, NotFound

CHUNK = 1 << 20


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.inodes = root / "inodes"

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise Invalid(f"{sha256!r} is not a sha256 digest")
        return self.blobs / sha256[:2] / sha256

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

    def inode(self, sha256: str, mode: int, uid: int, gid: int, mtime: int) -> Path:
        """A file with this content and metadata, made once, for hard links to share."""
        name = f"{sha256}-{mode:o}-{uid}-{gid}-{mtime}"
        target = self.inodes / sha256[:2] / name
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, self.open(sha256) as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
            if os.geteuid() == 0:
                os.chown(tmp_name, uid, gid)
            os.chmod(tmp_name, mode)
            os.utime(tmp_name, (mtime, mtime))
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return target

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
