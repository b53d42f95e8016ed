"""Reading the fleet event log: filters and cursor pagination."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.pagination import Page, paginate
from powernode.errors import Invalid
from powernode.events.models import FleetEvent, Severity
from powernode.schemas import UtcDatetime


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    occurred_at: dt.datetime
    kind: str
    severity: Severity
    subject_type: str
    subject_id: uuid.UUID | None
    actor: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    payload: dict[str, Any]


class EventFilter(BaseModel):
    kind: str | None = None
    severity: Severity | None = None
    subject_type: str | None = None
    subject_id: uuid.UUID | None = None
    correlation_id: uuid.UUID | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    after: uuid.UUID | None = Field(
        default=None, description="Only events after this event id (to follow the log)."
    )
    order: Literal["asc", "desc"] = Field(default="asc", description="asc: oldest first.")


async def list_events(
    session: AsyncSession, flt: EventFilter, *, limit: int, cursor: str | None
) -> Page[FleetEvent]:
    """Events oldest first; a `kind` ending in `.*` matches the prefix (`node.*`)."""
    stmt = select(FleetEvent)
    if flt.kind is not None:
        if flt.kind.endswith(".*"):
            stmt = stmt.where(FleetEvent.kind.startswith(flt.kind[:-1], autoescape=True))
        else:
            stmt = stmt.where(FleetEvent.kind == flt.kind)
    if flt.severity is not None:
        stmt = stmt.where(FleetEvent.severity == str(flt.severity))
    if flt.subject_type is not None:
        stmt = stmt.where(FleetEvent.subject_type == flt.subject_type)
    if flt.subject_id is not None:
        stmt = stmt.where(FleetEvent.subject_id == flt.subject_id)
    if flt.correlation_id is not None:
        stmt = stmt.where(FleetEvent.correlation_id == flt.correlation_id)
    if flt.since is not None:
        stmt = stmt.where(FleetEvent.occurred_at >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(FleetEvent.occurred_at < flt.until)
    if flt.after is not None:
        stmt = stmt.where(FleetEvent.id > flt.after)
    return await paginate(
        session, stmt, FleetEvent.id, limit=limit, cursor=cursor, descending=flt.order == "desc"
    )


MAX_CHAIN = 10_000


async def event_chain(session: AsyncSession, correlation_id: uuid.UUID) -> list[FleetEvent]:
    """Every event of one correlation chain in causal order: each event after the event that
    caused it, siblings (and unrelated roots) in the order they were recorded."""
    rows = (
        await session.scalars(
            select(FleetEvent)
            .where(FleetEvent.correlation_id == correlation_id)
            .order_by(FleetEvent.id)
            .limit(MAX_CHAIN + 1)
        )
    ).all()
    if len(rows) > MAX_CHAIN:
        raise Invalid(
            f"chain {correlation_id} has more than {MAX_CHAIN} events; page through "
            "/events?correlation_id=... instead",
            field="correlation_id",
        )
    ids = {row.id for row in rows}
    children: dict[uuid.UUID | None, list[FleetEvent]] = {}
    for row in rows:  # ordered by id, so each child list is in recording order
        parent = row.causation_id if row.causation_id in ids else None
        children.setdefault(parent, []).append(row)
    ordered: list[FleetEvent] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        event = stack.pop()
        ordered.append(event)
        stack.extend(reversed(children.get(event.id, [])))
    return ordered
