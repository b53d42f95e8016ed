"""Leader election per job: each job runs on exactly one worker at a time.

- PostgreSQL: session-level advisory locks (`pg_try_advisory_lock`) held on one dedicated
  connection per worker. The leader keeps its locks for as long as its connection lives; when the
  worker dies, PostgreSQL drops the connection and with it the locks, and the next follower to
  reach a scheduled run takes the job, so the hand-over happens within one schedule period.
  Before every run the leader proves its connection alive; if it is not, it stops leading
  everything and competes again on a new connection.
- SQLite (one machine): `flock` on a lock file per job under `DATA_DIR/locks`, released by the
  kernel when the holding process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def lock_key(job: str) -> int:
    """A stable signed 64-bit advisory lock key for `job`."""
    digest = hashlib.sha256(f"powernode.job.{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Election(Protocol):
    async def lead(self, job: str) -> bool:
        """True when this worker leads `job` now (acquiring it if free)."""
        ...

    async def close(self) -> None: ...


class AdvisoryLockElection:
    """PostgreSQL advisory locks on a dedicated connection (see the module docstring)."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._conn: Any = None
        self.held: set[str] = set()

    async def _connection(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        if self._conn is None or self._conn.is_closed():
            self.held.clear()
            self._conn = await asyncpg.connect(self._dsn)
        return self._conn

    async def lead(self, job: str) -> bool:
        try:
            conn = await self._connection()
            if job in self.held:
                await conn.fetchval("SELECT 1")  # still connected means still holding
                return True
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(job)):
                self.held.add(job)
                return True
            return False
        except Exception as exc:  # lost the connection: lost every lock with it
            log.warning("leader election: connection lost (%s); leading nothing", exc)
            await self.close()
            return False

    async def close(self) -> None:
        self.held.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


class FileLockElection:
    """flock(2) on `directory/<job>.lock` (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.held: dict[str, int] = {}

    async def lead(self, job: str) -> bool:
        if job in self.held:
            return True
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / f"{job}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.held[job] = fd
        return True

    async def close(self) -> None:
        for fd in self.held.values():
            os.close(fd)
        self.held.clear()


def election_for(database_url: str, data_dir: Path) -> Election:
    """Advisory locks on PostgreSQL, lock files otherwise."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return AdvisoryLockElection(database_url)
    return FileLockElection(data_dir / "locks")
