"""/api/v1/events"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from powernode.api.deps import Cursor, Limit, Reader, SessionDep
from powernode.events.query import EventFilter, EventOut, list_events
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
    """Fleet events oldest first; `kind=node.*` matches a prefix; `since`/`until` bound time."""
    page = await list_events(session, flt, limit=limit, cursor=cursor)
    return PageOut(
        items=[EventOut.model_validate(e) for e in page.items], next_cursor=page.next_cursor
    )
