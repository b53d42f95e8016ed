"""ProviderAccount and its catalog rows (Region, Zone, InstanceType)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from powernode.db.base import Base, IdMixin


class ProviderKind(enum.StrEnum):
    """Where nodes can be created."""

    LOCAL = "local"
    QEMU = "qemu"
    AWS = "aws"
    GCP = "gcp"
    AZURE = "azure"
    OPENSTACK = "openstack"
    DIGITALOCEAN = "digitalocean"


class ProviderAccount(IdMixin, Base):
    """An account on a provider. `credentials_ref` points at a secret; no secret is stored here."""

    __tablename__ = "provider_accounts"

    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    credentials_ref: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Region(IdMixin, Base):
    __tablename__ = "regions"
    __table_args__ = (UniqueConstraint("provider_account_id", "name"),)

    provider_account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("provider_accounts.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Zone(IdMixin, Base):
    __tablename__ = "zones"
    __table_args__ = (UniqueConstraint("region_id", "name"),)

    region_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("regions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class InstanceType(IdMixin, Base):
    __tablename__ = "instance_types"
    __table_args__ = (UniqueConstraint("provider_account_id", "name"),)

    provider_account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("provider_accounts.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(63))
    vcpus: Mapped[int]
    memory_mib: Mapped[int]
    arch: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
