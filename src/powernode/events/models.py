"""FleetEvent: one row per change or refusal, never updated."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import BigInteger, FetchedValue, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from powernode.db.base import Base, IdMixin


class Severity(enum.StrEnum):
    """Fleet event severity; decides retention (routine 90 days, critical 365 by default)."""

    ROUTINE = "routine"
    """Normal operation."""
    CRITICAL = "critical"
    """Failures, refusals, destruction: kept longer and surfaced to operators."""


class FleetEvent(IdMixin, Base):
    __tablename__ = "fleet_events"
    __table_args__ = (
        Index("ix_fleet_events_subject", "subject_type", "subject_id"),
        Index("ix_fleet_events_occurred_at", "occurred_at"),
        Index("ix_fleet_events_correlation_id", "correlation_id"),
        Index("ix_fleet_events_kind", "kind"),
        Index("ix_fleet_events_txid_id", "txid", "id"),
    )

    occurred_at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(16))
    subject_type: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[uuid.UUID | None]
    actor: Mapped[str] = mapped_column(String(200))
    correlation_id: Mapped[uuid.UUID]
    causation_id: Mapped[uuid.UUID | None]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The live stream's ordering key, set by the database (migration 0003): on PostgreSQL the
    # writing transaction's id, on SQLite a counter a trigger assigns at insert. Never read it
    # through the ORM (it is not loaded after insert); events/stream.py selects it explicitly.
    txid: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())


class EventStreamCounter(Base):
    """SQLite only: the last stream position handed out (one row, see migration 0003)."""

    __tablename__ = "event_stream_counter"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
