"""module version key

Revision ID: 0008
Revises: 0007

Module versions get `version_key`, the text every PEP 440-equal spelling of a version shares
("1.1" and "1.1.0" both give "1.1"), with a unique index on (module_id, version_key): the
resolver treats equal versions as one, so a module must not hold two of them.

No table rebuild on SQLite: a rebuild drops `module_versions`, and with foreign keys on, that
deletes every artifact and signature row referring to it (ON DELETE CASCADE). Adding a column
with a default and a unique index are plain ALTER TABLE / CREATE INDEX statements there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from powernode.errors import Invalid
from powernode.modules.spec import version_key

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_versions = sa.table(
    "module_versions",
    sa.column("id", sa.Uuid()),
    sa.column("module_id", sa.Uuid()),
    sa.column("version", sa.String()),
    sa.column("version_key", sa.String()),
)
_modules = sa.table("modules", sa.column("id", sa.Uuid()), sa.column("name", sa.String()))


def _key(text: str) -> str:
    try:
        return version_key(text)
    except Invalid:  # imports always parsed the version; keep any oddity distinct, not fatal
        return text


def upgrade() -> None:
    # SQLite adds a NOT NULL column only with a default; every row gets its key just below.
    op.add_column(
        "module_versions",
        sa.Column("version_key", sa.String(length=100), nullable=False, server_default=""),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_versions.c.id, _versions.c.module_id, _versions.c.version, _modules.c.name)
        .join(_modules, _modules.c.id == _versions.c.module_id)
        .order_by(_modules.c.name, _versions.c.version)
    ).all()
    seen: dict[tuple[object, str], str] = {}
    duplicates: list[str] = []
    for row_id, module_id, version, name in rows:
        key = _key(version)
        if (module_id, key) in seen:
            duplicates.append(f"{name} {seen[module_id, key]!r} and {version!r}")
        seen[module_id, key] = version
        bind.execute(sa.update(_versions).where(_versions.c.id == row_id).values(version_key=key))
    if duplicates:
        raise RuntimeError(
            "these module versions are the same PEP 440 version, which the resolver cannot "
            "tell apart: " + "; ".join(duplicates) + ". Delete the row of one version of each pair "
            "from the module_versions table (powernode has no command that deletes versions) "
            "and run the migration again"
        )
    if bind.dialect.name != "sqlite":  # SQLite cannot drop a default without a rebuild
        op.alter_column("module_versions", "version_key", server_default=None)
    op.create_index(
        "ix_module_versions_version_key",
        "module_versions",
        ["module_id", "version_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_module_versions_version_key", table_name="module_versions")
    op.drop_column("module_versions", "version_key")
