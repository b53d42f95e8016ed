"""/api/v1/events"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from powernode.api.deps import Cursor, Limit, Reader, SessionDep
from powernode.api.runtime import require_runtime
from powernode.events.models import Severity
from powernode.events.query import EventFilter, EventOut, event_chain, list_events
from powernode.events.stream import EventBroker, StreamFilter, sse_frames
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


class StreamQuery(BaseModel):
    kind: str | None = None
    severity: Severity | None = None
    subject_type: str | None = None
    subject_id: uuid.UUID | None = None
    correlation_id: uuid.UUID | None = None
    last_event_id: uuid.UUID | None = None


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
)
async def stream(
    request: Request,
    session: SessionDep,
    _: Reader,
    query: Annotated[StreamQuery, Query()],
    last_event_id: Annotated[uuid.UUID | None, Header()] = None,
) -> StreamingResponse:
    """Live fleet events as Server-Sent Events (`id:` is the event id, `data:` the event as in
    `GET /events`). A client that reconnects with `Last-Event-ID` (or `?last_event_id=`) gets
    every event after that one; without it the stream starts now. Filters as in `GET /events`."""
    require_runtime(request)
    # The stream can last hours: give the request's pooled connection back now.
    await session.close()
    broker: EventBroker = request.app.state.broker
    flt = StreamFilter(
        kind=query.kind,
        severity=str(query.severity) if query.severity else None,
        subject_type=query.subject_type,
        subject_id=query.subject_id,
        correlation_id=query.correlation_id,
    )
    frames = sse_frames(broker, flt, resume_after=last_event_id or query.last_event_id)
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
