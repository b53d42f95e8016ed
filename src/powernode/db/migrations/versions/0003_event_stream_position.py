"""event stream position

Revision ID: 0003
Revises: 0002

On PostgreSQL every fleet event records the id of the transaction that wrote it
(`pg_current_xact_id()`); the live stream orders by (txid, id) and only delivers events of
transactions older than the oldest one still running, so an event that commits late is never
skipped (see powernode/events/stream.py). On SQLite a trigger numbers events from a counter
row as they are inserted; writers are serialized, so that number is commit order too, and unlike
rowid it is never reused after retention deletes the newest rows. (A later batch migration of
fleet_events on SQLite recreates the table and must recreate the trigger.)
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
    # Used by SQLite only; present on both so the schema is the same everywhere.
    op.create_table(
        "event_stream_counter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_stream_counter")),
    )
    if postgres:
        # Every statement that inserts events tells the other processes (newest 200 ids; the
        # payload limit is 8,000 bytes). In the database, so bulk loads notify too and writers
        # pay no extra round trip.
        op.execute(
            "CREATE FUNCTION powernode_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN PERFORM pg_notify('powernode_events', (SELECT string_agg(id::text, ',') "
            "FROM (SELECT id FROM new_events ORDER BY id DESC LIMIT 200) AS newest)); "
            "RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER fleet_events_notify AFTER INSERT ON fleet_events "
            "REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT "
            "EXECUTE FUNCTION powernode_notify_events()"
        )
    else:
        op.execute("UPDATE fleet_events SET txid = rowid")
        op.execute(
            "INSERT INTO event_stream_counter (id, value) "
            "SELECT 1, coalesce(max(txid), 0) FROM fleet_events"
        )
        op.execute(
            "CREATE TRIGGER fleet_events_stream_position AFTER INSERT ON fleet_events BEGIN "
            "UPDATE event_stream_counter SET value = value + 1 WHERE id = 1; "
            "UPDATE fleet_events SET txid = (SELECT value FROM event_stream_counter WHERE id = 1) "
            "WHERE rowid = NEW.rowid; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER fleet_events_notify ON fleet_events")
        op.execute("DROP FUNCTION powernode_notify_events()")
    else:
        op.execute("DROP TRIGGER IF EXISTS fleet_events_stream_position")
    op.drop_table("event_stream_counter")
    op.drop_index("ix_fleet_events_txid_id", table_name="fleet_events")
    with op.batch_alter_table("fleet_events") as batch:
        batch.drop_column("txid")
