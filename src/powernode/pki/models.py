"""Bootstrap tokens and issued node certificates."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from powernode.db.base import Base, IdMixin


class BootstrapToken(IdMixin, Base):
    """A single-use enrollment token bound to one node; only the secret's SHA-256 is stored."""

    __tablename__ = "bootstrap_tokens"
    __table_args__ = (Index("ix_bootstrap_tokens_node_id", "node_id"),)

    token_id: Mapped[str] = mapped_column(String(6), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class NodeCertificate(Base):
    """A client certificate issued to a node; `revoked_at` set = refused from then on."""

    __tablename__ = "node_certificates"
    __table_args__ = (
        Index("ix_node_certificates_node_id", "node_id"),
        Index("ix_node_certificates_revoked_at", "revoked_at"),
    )

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)  # hex, up to 160 bits
    node_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    fingerprint_sha256: Mapped[str] = mapped_column(String(64))
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    issued_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(Text)


class CertificateAuthorityRow(Base):
    """The CA shared by every `serve` replica: certificates and passphrase-encrypted keys.

    The database is the source of truth, so replicas on one PostgreSQL issue and accept the
    same certificates; each keeps a copy in its data dir (pki/runtime.py)."""

    __tablename__ = "certificate_authority"

    id: Mapped[int] = mapped_column(primary_key=True)
    root_cert: Mapped[str] = mapped_column(Text)
    root_key: Mapped[str] = mapped_column(Text)
    intermediate_cert: Mapped[str] = mapped_column(Text)
    intermediate_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
