"""Module and ModuleVersion tables. A version's file entries live in its manifest blob in the
content store (immutable, addressed by sha256); the row keeps the spec and the summary."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column

from powernode.db.base import Base, IdMixin
from powernode.modules.spec import version_key


class Module(IdMixin, Base):
    __tablename__ = "modules"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]


def _version_key(context: DefaultExecutionContext) -> str:
    # Rows added without a key (fixtures, other services) still get the right one.
    version: str = context.get_current_parameters()["version"]  # type: ignore[no-untyped-call]
    return version_key(version)


class ModuleVersion(IdMixin, Base):
    """One immutable version: its spec, and the digest of its entry list in the content store."""

    __tablename__ = "module_versions"
    __table_args__ = (
        UniqueConstraint("module_id", "version"),
        # One row per PEP 440 version: "1.1" and "1.1.0" are the same version to the resolver,
        # so the second import of it must fail even when two imports race. A unique index
        # rather than a constraint: SQLite adds one without rebuilding the table (see 0008).
        Index("ix_module_versions_version_key", "module_id", "version_key", unique=True),
    )

    module_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("modules.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(64))
    """As the operator wrote it."""
    version_key: Mapped[str] = mapped_column(String(100), default=_version_key)
    """`spec.version_key(version)`: the same for every spelling of one PEP 440 version."""
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    entries_sha256: Mapped[str] = mapped_column(String(64))
    file_count: Mapped[int]
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(200))
