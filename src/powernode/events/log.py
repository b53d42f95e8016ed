"""Writing fleet events.

Every write goes through `record_event`, into the caller's session, so an event commits with the
change it describes. `EventContext` carries who acted and the correlation chain; an API request,
a job tick or a sensor creates one and passes it down explicitly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from powernode.clock import Clock, SystemClock
from powernode.events.models import FleetEvent, Severity
from powernode.ids import new_id

__all__ = ["EventContext", "Severity", "event_values", "insert_events", "record_event"]

PENDING_EVENT_IDS = "powernode_fleet_event_ids"
"""Key in a connection's `info` under which Core writers leave the ids of uncommitted events."""


@dataclass(frozen=True)
class EventContext:
    """Who is acting, and which chain of cause and effect the action belongs to."""

    actor: str
    correlation_id: uuid.UUID = field(default_factory=new_id)
    causation_id: uuid.UUID | None = None
    clock: Clock = field(default_factory=SystemClock)

    def caused_by(self, event_id: uuid.UUID) -> EventContext:
        """The same chain, with later events caused by `event_id`."""
        return replace(self, causation_id=event_id)


async def record_event(
    session: AsyncSession,
    ctx: EventContext,
    *,
    kind: str,
    subject_type: str,
    subject_id: uuid.UUID | None,
    severity: Severity = Severity.ROUTINE,
    payload: dict[str, Any] | None = None,
    event_id: uuid.UUID | None = None,
) -> FleetEvent:
    """Add one fleet event to `session`; it commits with the caller's transaction.

    `event_id` is for an event whose id was handed out before it is written (a job run's
    events are caused by the run's event, which is recorded when the run ends)."""
    row = FleetEvent(
        id=event_id or new_id(),
        occurred_at=ctx.clock.now(),
        kind=kind,
        severity=str(severity),
        subject_type=subject_type,
        subject_id=subject_id,
        actor=ctx.actor,
        correlation_id=ctx.correlation_id,
        causation_id=ctx.causation_id,
        payload=payload or {},
    )
    session.add(row)
    return row


def event_values(
    ctx: EventContext,
    *,
    kind: str,
    subject_type: str,
    subject_id: uuid.UUID | None,
    severity: Severity = Severity.ROUTINE,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The column values of one fleet event, for `insert_events`."""
    return {
        "id": new_id(),
        "occurred_at": ctx.clock.now(),
        "kind": kind,
        "severity": str(severity),
        "subject_type": subject_type,
        "subject_id": subject_id,
        "actor": ctx.actor,
        "correlation_id": ctx.correlation_id,
        "causation_id": ctx.causation_id,
        "payload": payload or {},
    }


async def insert_events(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Write events on a Core connection (hot paths that skip the ORM); they commit with the
    connection's transaction, and the live stream hears of them at commit (events/stream.py)."""
    await conn.execute(insert(FleetEvent), rows)
    pending = conn.info.setdefault(PENDING_EVENT_IDS, [])
    pending.extend(row["id"] for row in rows)
