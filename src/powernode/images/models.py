"""Boot artifacts registered with the control plane.

A build of one template for one architecture yields one artifact per format (initramfs, disk,
iso, ipxe, qcow2, bootc). Each artifact is one or more files whose bytes live in the content
store, named by sha256; rows only say which files make which artifact of which build.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from powernode.db.base import Base, IdMixin, JSONType


class BootArtifact(IdMixin, Base):
    """One format of one build: `files` is `[{"name", "sha256", "size"}]`, in a fixed order
    (the first is the artifact's main file: the disk image, the ISO, the initramfs...)."""

    __tablename__ = "boot_artifacts"
    __table_args__ = (
        UniqueConstraint("template_id", "arch", "format", "inputs_digest"),
        CheckConstraint("arch IN ('amd64', 'arm64')", name="arch"),
        Index("ix_boot_artifacts_lookup", "template_id", "arch", "format", "created_at"),
    )

    template_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    template_version: Mapped[int]
    """The template row's version when built."""
    inputs_digest: Mapped[str] = mapped_column(String(71))
    """sha256 over everything the build read: packages, module manifest, agent, builder."""
    arch: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    kernel_version: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(71))
    """`sha256:<hex>` of the main file (for bootc, the OCI manifest digest)."""
    size: Mapped[int] = mapped_column(BigInteger)
    """Total bytes of all files."""
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Format-specific facts (kernel command line, partition table, OCI layout reference...)."""
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]
