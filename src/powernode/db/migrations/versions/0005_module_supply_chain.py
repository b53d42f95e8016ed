"""module supply chain

Revision ID: 0005
Revises: 0004

The control plane's registry: each module version's OCI artifact (built once, its digests fixed),
uploaded cosign signature manifests (bytes in the content store), and one trust policy per module
name.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "module_trust_policies",
        sa.Column("module_name", sa.String(length=100), nullable=False),
        sa.Column(
            "policy",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_module_trust_policies")),
        sa.UniqueConstraint("module_name", name=op.f("uq_module_trust_policies_module_name")),
    )
    op.create_table(
        "module_artifacts",
        sa.Column("module_version_id", sa.Uuid(), nullable=False),
        sa.Column("manifest_digest", sa.String(length=71), nullable=False),
        sa.Column("config_digest", sa.String(length=71), nullable=False),
        sa.Column("layer_digest", sa.String(length=71), nullable=False),
        sa.Column("layer_size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["module_version_id"],
            ["module_versions.id"],
            name=op.f("fk_module_artifacts_module_version_id_module_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_module_artifacts")),
        sa.UniqueConstraint(
            "module_version_id", name=op.f("uq_module_artifacts_module_version_id")
        ),
    )
    with op.batch_alter_table("module_artifacts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_module_artifacts_manifest_digest", ["manifest_digest"], unique=False
        )

    op.create_table(
        "module_signatures",
        sa.Column("module_version_id", sa.Uuid(), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("flavour", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "flavour IN ('tag', 'referrer')", name=op.f("ck_module_signatures_flavour")
        ),
        sa.ForeignKeyConstraint(
            ["module_version_id"],
            ["module_versions.id"],
            name=op.f("fk_module_signatures_module_version_id_module_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_module_signatures")),
        sa.UniqueConstraint(
            "module_version_id", "digest", name=op.f("uq_module_signatures_module_version_id")
        ),
    )
    with op.batch_alter_table("module_signatures", schema=None) as batch_op:
        batch_op.create_index("ix_module_signatures_digest", ["digest"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("module_signatures", schema=None) as batch_op:
        batch_op.drop_index("ix_module_signatures_digest")
    op.drop_table("module_signatures")
    with op.batch_alter_table("module_artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_module_artifacts_manifest_digest")
    op.drop_table("module_artifacts")
    op.drop_table("module_trust_policies")
