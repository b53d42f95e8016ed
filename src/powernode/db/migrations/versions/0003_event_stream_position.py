"""event stream position

Revision ID: 0003
Revises: 0002

On PostgreSQL every fleet event records the id of the transaction that wrote it
(`pg_current_xact_id()`); the live stream orders by (txid, id) and only delivers events of
transactions older than the oldest one still running, so an event that commits late is never
skipped (see powernode/events/stream.py). SQLite orders by rowid (one writer at a time), so the
column stays NULL there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("fleet_events") as batch:
        batch.add_column(
            sa.Column(
                "txid",
                sa.BigInteger(),
                server_default=sa.text("(pg_current_xact_id()::text::bigint)")
                if postgres
                else None,
                nullable=True,
            )
        )
    op.create_index("ix_fleet_events_txid_id", "fleet_events", ["txid", "id"])


def downgrade() -> None:
    op.drop_index("ix_fleet_events_txid_id", table_name="fleet_events")
    with op.batch_alter_table("fleet_events") as batch:
        batch.drop_column("txid")
