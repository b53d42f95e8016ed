"""Alembic, driven from code: `powernode init`, `/readyz` and tests call these.

Migrations live in `powernode/db/migrations` and form one linear history valid on SQLite and
PostgreSQL (batch mode on SQLite, so ALTERs work there too).
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic treats '%' as interpolation; escape it so passwords with '%' survive.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def head_revision() -> str:
    """The head migration; read once, since the scripts do not change while we run (`/readyz`
    asks on every probe)."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migration history must be linear, found heads {heads}")
    return heads[0]


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """`upgrade` from inside a running event loop (Alembic's env starts its own loop)."""
    await asyncio.to_thread(upgrade, url, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


async def check_at_head(url: str) -> None:
    """Unavailable unless the database answers and is migrated to head (so `serve` fails fast)."""
    from powernode.db.engine import create_engine
    from powernode.errors import Unavailable

    engine = create_engine(url)
    try:
        try:
            current = await current_revision(engine)
        except Exception as exc:
            raise Unavailable(f"cannot reach the database at {url}: {exc}") from exc
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        raise Unavailable(
            f"the database is at migration {current or 'none'}, not {head}: "
            "run 'powernode init' (it migrates and is safe to repeat)"
        )
