"""Database fixtures shared by every test: each runs on SQLite and on PostgreSQL.

SQLite tests get a new file per test. PostgreSQL tests share one database per test session,
created fresh (never the server's own databases), migrated once, emptied with TRUNCATE before
each test and dropped at the end of the session. `POWERNODE_TEST_POSTGRES_URL` names the server;
unset, the PostgreSQL cases skip; set but unreachable, they fail, so CI cannot pass silently
without PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from powernode.db.engine import Database, async_url
from powernode.db.migrate import upgrade
from powernode.db.models import Base

POSTGRES_URL_ENV = "POWERNODE_TEST_POSTGRES_URL"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (`CI=true`) a skipped test fails: a missing tool or server must not pass silently.

    Every test skips only when something it needs (PostgreSQL, rsync, fsverity, QEMU, …) is
    absent, and `make test` installs all of it; so in CI a skip means the setup is broken.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which needs every test to run: {report.longrepr}"


T = TypeVar("T")


def in_thread(fn: Callable[[], T]) -> T:
    """Call `fn` in a new thread and return its result.

    Alembic's env and the admin statements start their own event loop with `asyncio.run`, which
    refuses to run where a loop is already running; a thread of their own always works.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine `factory()` to completion from sync code."""
    return in_thread(lambda: asyncio.run(factory()))


def _admin_engine(url: str) -> AsyncEngine:
    """An engine for admin statements (CREATE/DROP DATABASE need autocommit), no pooling."""
    return create_async_engine(
        async_url(url),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"timeout": 10},
    )


async def _execute(url: str, *statements: tuple[str, dict[str, Any]]) -> None:
    engine = _admin_engine(url)
    try:
        async with engine.connect() as conn:
            for sql, params in statements:
                await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


def _safe_name(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    return name


class PostgresServer:
    """Creates and drops throwaway databases through an admin connection."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def check_reachable(self) -> None:
        """Fail (never skip) when the configured server does not answer."""
        try:
            run_coroutine(lambda: _execute(self.admin_url, ("SELECT 1", {})))
        except Exception as exc:
            pytest.fail(
                f"{POSTGRES_URL_ENV}={make_url(self.admin_url)} is set but the server cannot "
                f"be reached: {exc}; start PostgreSQL (.ci/run does) or unset the variable",
                pytrace=False,
            )

    def create(self, prefix: str = "powernode_test") -> str:
        """A new empty database; returns its URL."""
        name = _safe_name(f"{prefix}_{secrets.token_hex(6)}")
        run_coroutine(lambda: _execute(self.admin_url, (f'CREATE DATABASE "{name}"', {})))
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        """Drop the database at `url`, disconnecting whoever is still connected."""
        name = _safe_name(str(make_url(url).database))
        terminate = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :name AND pid <> pg_backend_pid()"
        )
        run_coroutine(
            lambda: _execute(
                self.admin_url,
                (terminate, {"name": name}),
                (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', {}),
            )
        )


def _truncate(url: str) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables if t.name != "alembic_version"]
    statement = "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"
    run_coroutine(lambda: _execute(url, (statement, {})))


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL server named by POWERNODE_TEST_POSTGRES_URL; skip when unset."""
    admin_url = os.environ.get(POSTGRES_URL_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set; PostgreSQL cases need a server")
    server = PostgresServer(admin_url)
    server.check_reachable()
    return server


@pytest.fixture(scope="session")
def postgres_session_db(postgres_server: PostgresServer) -> Iterator[str]:
    """This session's own PostgreSQL database, migrated to head once; dropped at the end."""
    url = postgres_server.create()
    try:
        in_thread(lambda: upgrade(url))
        yield url
    finally:
        postgres_server.drop(url)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of this test's backend: a new SQLite file, or the session's PostgreSQL DB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    url: str = request.getfixturevalue("postgres_session_db")
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests get copies of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    in_thread(lambda: upgrade(f"sqlite:///{path}"))
    return path


@pytest.fixture
def migrated_db_url(db_url: str, request: pytest.FixtureRequest) -> str:
    """An empty database at the head revision."""
    if make_url(db_url).get_backend_name() == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, make_url(db_url).database or "")
    else:
        _truncate(db_url)
    return db_url


@pytest.fixture
def fresh_db_url(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty, unmigrated database of this test's backend, for migration tests."""
    if make_url(db_url).get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create(prefix="powernode_test_fresh")
    try:
        yield url
    finally:
        server.drop(url)


@pytest.fixture
async def database(migrated_db_url: str) -> AsyncIterator[Database]:
    """A `Database` over an empty, migrated database; disposed after the test."""
    db = Database(migrated_db_url)
    try:
        yield db
    finally:
        await db.dispose()
