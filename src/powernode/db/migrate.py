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


def shown_url(url: str) -> str:
    """`url` fit for messages and logs: the password masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL carries no password we could find; say only that
        return "<unparsable database URL>"


def database_error(url: str, exc: BaseException) -> str:
    """One line saying why the database at `url` did not answer, without its password.

    SQLAlchemy's own text adds the statement and a "Background on this error" link on further
    lines; the driver's message (`exc.orig`) is what an operator needs.
    """
    from sqlalchemy.exc import DBAPIError

    reason = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else str(exc)
    first_line = reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__
    return f"cannot use the database at {shown_url(url)}: {first_line}"


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file `url` names when it does not exist yet (the data dir was never `init`ed)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


async def check_at_head(url: str) -> None:
    """Unavailable unless the database answers and is migrated to head (so `serve` fails fast)."""
    from powernode.db.engine import create_engine
    from powernode.errors import Unavailable

    missing = missing_sqlite_file(url)
    if missing is not None:
        raise Unavailable(
            f"there is no database at {missing}: run 'powernode init' first "
            "(with the same POWERNODE_DATA_DIR / POWERNODE_DATABASE_URL)"
        )
    engine = create_engine(url)
    try:
        try:
            current = await current_revision(engine)
        except Exception as exc:
            raise Unavailable(database_error(url, exc)) from exc
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        raise Unavailable(
            f"the database is at migration {current or 'none'}, not {head}: "
            "run 'powernode init' (it migrates and is safe to repeat)"
        )
