"""Migration 0008 gives existing module versions their PEP 440 key, and refuses a database that
already holds two spellings of one version rather than pick one silently."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from powernode.db.engine import Database
from powernode.db.migrate import downgrade, upgrade_async

T = TypeVar("T")
BEFORE = "0007"
modules = sa.table(
    "modules",
    sa.column("id", sa.Uuid()),
    sa.column("name", sa.String()),
    sa.column("description", sa.Text()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
versions = sa.table(
    "module_versions",
    sa.column("id", sa.Uuid()),
    sa.column("module_id", sa.Uuid()),
    sa.column("version", sa.String()),
    sa.column("spec", sa.JSON()),
    sa.column("entries_sha256", sa.String()),
    sa.column("file_count", sa.Integer()),
    sa.column("total_bytes", sa.BigInteger()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("created_by", sa.String()),
)
NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


async def _run(url: str, work: Callable[[Connection], T]) -> T:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await db.dispose()


def _insert(module_versions: dict[str, list[str]]) -> Callable[[Connection], None]:
    def insert(conn: Connection) -> None:
        for name, texts in module_versions.items():
            module_id = uuid.uuid4()
            conn.execute(
                sa.insert(modules).values(id=module_id, name=name, description="", created_at=NOW)
            )
            for text in texts:
                conn.execute(
                    sa.insert(versions).values(
                        id=uuid.uuid4(),
                        module_id=module_id,
                        version=text,
                        spec={"packages": []},
                        entries_sha256="0" * 64,
                        file_count=0,
                        total_bytes=0,
                        created_at=NOW,
                        created_by="test",
                    )
                )

    return insert


def _keys(conn: Connection) -> dict[str, str]:
    rows = conn.execute(sa.text("SELECT version, version_key FROM module_versions"))
    return {version: key for version, key in rows}


def _columns(conn: Connection) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns("module_versions")}


async def test_existing_versions_get_their_key_and_downgrade_drops_it(
    fresh_db_url: str,
) -> None:
    """Every row gets the key of its version; the old row's spec keys are untouched."""
    await upgrade_async(fresh_db_url, BEFORE)
    await _run(fresh_db_url, _insert({"base": ["1.0", "1.1.0", "2.0-1"], "web": ["1.1"]}))
    await upgrade_async(fresh_db_url)
    assert await _run(fresh_db_url, _keys) == {
        "1.0": "1",
        "1.1.0": "1.1",
        "2.0-1": "2.post1",
        "1.1": "1.1",  # another module: no clash
    }
    await asyncio.to_thread(downgrade, fresh_db_url, BEFORE)
    assert "version_key" not in await _run(fresh_db_url, _columns)
    count = await _run(
        fresh_db_url,
        lambda conn: conn.execute(sa.select(sa.func.count()).select_from(versions)).scalar_one(),
    )
    assert count == 4


async def test_two_spellings_of_one_version_stop_the_migration(fresh_db_url: str) -> None:
    """Which of `1.1` and `1.1.0` to keep is the operator's call: the upgrade says so and
    leaves the database as it was."""
    await upgrade_async(fresh_db_url, BEFORE)
    await _run(fresh_db_url, _insert({"base": ["1.1", "1.1.0"]}))
    with pytest.raises(RuntimeError, match=r"base '1\.1' and '1\.1\.0'"):
        await upgrade_async(fresh_db_url)
    assert "version_key" not in await _run(fresh_db_url, _columns)
