"""The migration history builds exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from powernode.db.engine import Database
from powernode.db.migrate import current_revision, downgrade, head_revision, upgrade_async
from powernode.db.models import Base

MODEL_TABLES = set(Base.metadata.tables)


def _table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def _tables(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(_table_names)
    finally:
        await db.dispose()


async def _revision(url: str) -> str | None:
    db = Database(url)
    try:
        return await current_revision(db.engine)
    finally:
        await db.dispose()


async def test_upgrade_creates_every_model_table_and_stamps_head(fresh_db_url: str) -> None:
    """Upgrading an empty database reaches the single head and creates every model's table."""
    await upgrade_async(fresh_db_url)

    assert await _revision(fresh_db_url) == head_revision()
    tables = await _tables(fresh_db_url)
    assert tables >= MODEL_TABLES
    assert tables - MODEL_TABLES == {"alembic_version"}


async def test_downgrade_to_base_removes_everything_and_upgrade_works_again(
    fresh_db_url: str,
) -> None:
    """A full downgrade leaves no model tables behind, and the history can be replayed."""
    await upgrade_async(fresh_db_url)
    await asyncio.to_thread(downgrade, fresh_db_url, "base")

    assert await _tables(fresh_db_url) <= {"alembic_version"}
    assert await _revision(fresh_db_url) is None

    await upgrade_async(fresh_db_url)
    assert await _revision(fresh_db_url) == head_revision()
    assert await _tables(fresh_db_url) >= MODEL_TABLES


def _schema_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(migrated_db_url: str) -> None:
    """Autogenerate finds nothing to add: the migrations and the models agree."""
    db = Database(migrated_db_url)
    try:
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(_schema_diff)
    finally:
        await db.dispose()

    assert diff == [], "\n".join(repr(d) for d in diff)
