"""/api/v1/events"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from powernode.api.deps import Cursor, Limit, Reader, SessionDep
from powernode.events.query import EventFilter, EventOut, event_chain, list_events
from powernode.schemas import PageOut

router = APIRouter(prefix="/events", tags=["events"])


@router.get("")
async def events(
    session: SessionDep,
    _: Reader,
    flt: Annotated[EventFilter, Query()],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[EventOut]:
    """Fleet events, oldest first (`order=desc`: newest first); `kind=node.*` matches a prefix;
    `since`/`until` bound time; `after` gives only events after an event id."""
    page = await list_events(session, flt, limit=limit, cursor=cursor)
    return PageOut(
        items=[EventOut.model_validate(e) for e in page.items], next_cursor=page.next_cursor
    )


@router.get("/chains/{correlation_id}")
async def chain(session: SessionDep, _: Reader, correlation_id: uuid.UUID) -> list[EventOut]:
    """Every event one request, job tick or sensor caused, each after its cause."""
    return [EventOut.model_validate(e) for e in await event_chain(session, correlation_id)]
