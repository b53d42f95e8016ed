"""Node leases: the liveness row per node, kept apart from the node row so heartbeats never
contend with operator edits (and never bump the node's optimistic-concurrency version)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from powernode.db.base import Base


class NodeLease(Base):
    __tablename__ = "node_leases"
    __table_args__ = (Index("ix_node_leases_last_heartbeat_at", "last_heartbeat_at"),)

    node_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    last_heartbeat_at: Mapped[dt.datetime]
    agent_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[dict[str, Any]] = mapped_column(default=dict)
    beats: Mapped[int] = mapped_column(default=0)
