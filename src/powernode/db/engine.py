"""Async engine and session factory for SQLite (embedded default) and PostgreSQL.

A `Database` owns one engine; the API opens one session per request and commits once, so a
state change and the fleet event it writes land in the same transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from powernode.errors import Invalid

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(url: str) -> str:
    """Map a plain `sqlite://` or `postgresql://` URL onto the async driver we ship."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise Invalid(
            f"database URL {url!r} is not valid: use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from exc
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise Invalid(
            f"database backend {backend!r} is not supported: use sqlite:///PATH or "
            "postgresql://USER@HOST/DB"
        )
    driver = parsed.get_driver_name()
    if driver in ("aiosqlite", "asyncpg"):
        return parsed.render_as_string(hide_password=False)
    return parsed.set(drivername=_ASYNC_DRIVERS[backend]).render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # We emit BEGIN ourselves (see `_sqlite_begin`), so the driver must not.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; busy_timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(mode: str) -> Any:
    def begin(conn: Any) -> None:
        conn.exec_driver_sql(f"BEGIN {mode}")

    return begin


def create_engine(url: str, *, pool_size: int = 10, read_only: bool = False) -> AsyncEngine:
    """An async engine for URL with the pragmas and pool settings we rely on.

    On SQLite, transactions of a writing engine start with BEGIN IMMEDIATE: a writer takes the
    write lock before it reads, so it waits its turn (busy_timeout) instead of failing with
    SQLITE_BUSY when another writer committed after its read snapshot began. `read_only`
    engines use a plain deferred BEGIN, so reads never wait for writers (WAL).
    """
    target = async_url(url)
    if is_sqlite(url):
        engine = create_async_engine(target)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        begin = _sqlite_begin("DEFERRED" if read_only else "IMMEDIATE")
        event.listen(engine.sync_engine, "begin", begin)
        return engine
    # No pre-ping: it costs every request a round trip. A connection that died with its server
    # fails one request with 503 (see api/problems.py) and the pool replaces it.
    return create_async_engine(
        target, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800
    )


class Database:
    """Engines and session factories for one database.

    `sessions` is for work that may write; `read_sessions` for work that only reads. On
    PostgreSQL both share one engine; on SQLite readers get their own engine whose transactions
    do not take the write lock.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.engine = create_engine(url, pool_size=pool_size)
        self.read_engine = create_engine(url, read_only=True) if is_sqlite(url) else self.engine
        # A session class of our own, so session event hooks (the event stream's commit
        # doorbell) apply to this database only.
        self.session_class: type[Session] = type("WriteSession", (Session,), {})
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=self.session_class
        )
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
