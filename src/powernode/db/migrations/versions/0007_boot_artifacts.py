"""boot artifacts

Revision ID: 0007
Revises: 0006

Boot artifacts built from templates (initramfs, disk, iso, ipxe, qcow2, bootc), registered with
the control plane; their bytes are in the content store.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "boot_artifacts",
        sa.Column("template_id", sa.Uuid(), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False),
        sa.Column("inputs_digest", sa.String(length=71), nullable=False),
        sa.Column("arch", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("kernel_version", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("files", _json(), nullable=False),
        sa.Column("details", _json(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint("arch IN ('amd64', 'arm64')", name=op.f("ck_boot_artifacts_arch")),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_boot_artifacts_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_boot_artifacts")),
        sa.UniqueConstraint(
            "template_id",
            "arch",
            "format",
            "inputs_digest",
            name=op.f("uq_boot_artifacts_template_id"),
        ),
    )
    with op.batch_alter_table("boot_artifacts") as batch:
        batch.create_index(
            "ix_boot_artifacts_lookup", ["template_id", "arch", "format", "created_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("boot_artifacts") as batch:
        batch.drop_index("ix_boot_artifacts_lookup")
    op.drop_table("boot_artifacts")
