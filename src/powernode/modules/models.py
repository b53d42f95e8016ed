"""Module and ModuleVersion tables. A version's file entries live in its manifest blob in the
content store (immutable, addressed by sha256); the row keeps the spec and the summary."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from powernode.db.base import Base, IdMixin


class Module(IdMixin, Base):
    __tablename__ = "modules"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]


class ModuleVersion(IdMixin, Base):
    """One immutable version: its spec, and the digest of its entry list in the content store."""

    __tablename__ = "module_versions"
    __table_args__ = (UniqueConstraint("module_id", "version"),)

    module_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("modules.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    entries_sha256: Mapped[str] = mapped_column(String(64))
    file_count: Mapped[int]
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(200))
