"""catalog versions

Revision ID: 0009
Revises: 0008

Regions, zones and instance types get the `version` column every other mutable object has, so
their PATCH and DELETE take part in optimistic concurrency (a stale version is a 409). Existing
rows start at version 1. Plain ADD COLUMN with a server default: no table rebuild on SQLite
(a rebuild of `regions` would cascade-delete its zones).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ("regions", "zones", "instance_types")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table, sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "version")  # SQLite >= 3.35 drops a column in place
