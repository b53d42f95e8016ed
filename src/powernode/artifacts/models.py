"""Tables of the control plane's registry: built artifacts, uploaded signatures, trust policies.

Bytes live in the content store, named by sha256, so an OCI digest `sha256:<hex>` is the store
path `<hex>`: an artifact's config, layer and manifest, and each signature manifest and blob.
Rows only say which digests belong to which module version.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from powernode.db.base import Base, IdMixin

DIGEST_LENGTH = 71
"""`sha256:` and 64 hex digits."""
FLAVOURS = ("tag", "referrer")
"""How a signature manifest is found: cosign's `sha256-<hex>.sig` tag, or as an OCI referrer."""


class ModuleArtifact(IdMixin, Base):
    """The OCI artifact of one module version, built once; its digest never changes after."""

    __tablename__ = "module_artifacts"
    __table_args__ = (Index("ix_module_artifacts_manifest_digest", "manifest_digest"),)

    module_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("module_versions.id", ondelete="CASCADE"), unique=True
    )
    manifest_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    config_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    layer_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    layer_size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime]


class ModuleSignature(IdMixin, Base):
    """One uploaded cosign signature manifest over a module version's artifact."""

    __tablename__ = "module_signatures"
    __table_args__ = (
        UniqueConstraint("module_version_id", "digest"),
        CheckConstraint("flavour IN ('tag', 'referrer')", name="flavour"),
        Index("ix_module_signatures_digest", "digest"),
    )

    module_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("module_versions.id", ondelete="CASCADE")
    )
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    """The signature manifest's digest; its bytes are in the content store."""
    flavour: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]


class ModuleTrustPolicy(IdMixin, Base):
    """Who may sign a module, by module name: it may be set before the first import."""

    __tablename__ = "module_trust_policies"

    module_name: Mapped[str] = mapped_column(String(100), unique=True)
    policy: Mapped[dict[str, Any]]
    """`TrustPolicy.to_dict()`."""
    updated_at: Mapped[dt.datetime]
    updated_by: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
