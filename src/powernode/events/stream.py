"""The live fleet event stream: ordered, resumable, fanned out to every `serve` process.

Contract
- Events are delivered in *stream order*, a position per event that only ever grows in commit
  order, so "everything after position P" is a complete answer and a client resuming from the
  last event it saw misses nothing:
  - PostgreSQL: (txid, id), where txid is the writing transaction's id. Transaction ids are handed
    out at first write, not at commit, so a reader only takes events of transactions older than
    the oldest transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`): nothing can
    commit below that horizon any more. A long-running writing transaction therefore delays the
    stream (never loses from it).
  - SQLite: (txid, id) too, where txid is a counter a trigger assigns at insert. Writers are
    serialized (BEGIN IMMEDIATE), so insert order is commit order; unlike rowid, the counter is
    never reused when retention deletes the newest rows.
- Notifications are only a doorbell: on PostgreSQL a trigger sends `NOTIFY powernode_events`
  with the ids each insert statement wrote (the newest 200: far below the 8,000-byte payload
  limit), every process LISTENs; in-process commits ring directly. What is delivered is always
  read from the table, so a lost notification delays, never drops, an event (the tailer also
  polls).
- One tailer per process reads the table once and hands each batch to every subscriber; a
  subscriber that falls more than `queue_limit` events behind is switched to reading the table
  from its own position until it has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Select, event, func, select, text, tuple_
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from powernode.db.engine import Database
from powernode.events.log import PENDING_EVENT_IDS
from powernode.events.models import FleetEvent

log = logging.getLogger(__name__)

CHANNEL = "powernode_events"
ZERO = uuid.UUID(int=0)

Position = tuple[int, uuid.UUID]
"""(txid, event id): see the module docstring for what txid is on each database."""

_COLUMNS = (
    FleetEvent.id,
    FleetEvent.occurred_at,
    FleetEvent.kind,
    FleetEvent.severity,
    FleetEvent.subject_type,
    FleetEvent.subject_id,
    FleetEvent.actor,
    FleetEvent.correlation_id,
    FleetEvent.causation_id,
    FleetEvent.payload,
)
_NAMES = tuple(c.key for c in _COLUMNS)


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    """One event as the stream carries it: its position, the fields filters look at, and its
    SSE frame encoded once for every subscriber."""

    position: Position
    kind: str
    severity: str
    subject_type: str
    subject_id: uuid.UUID | None
    correlation_id: uuid.UUID
    payload: dict[str, Any]
    frame: bytes


def _encode(fields: dict[str, Any]) -> bytes:
    # default=str: asyncpg hands out its own UUID class, which orjson does not know.
    data = orjson.dumps(fields, default=str, option=orjson.OPT_UTC_Z)
    return b"id: " + str(fields["id"]).encode() + b"\ndata: " + data + b"\n\n"


def _streamed(position: int, row: Sequence[Any]) -> StreamedEvent:
    fields = dict(zip(_NAMES, row, strict=True))
    return StreamedEvent(
        position=(position, uuid.UUID(bytes=fields["id"].bytes)),
        kind=fields["kind"],
        severity=fields["severity"],
        subject_type=fields["subject_type"],
        subject_id=fields["subject_id"],
        correlation_id=fields["correlation_id"],
        payload=fields["payload"],
        frame=_encode(fields),
    )


class StreamReader:
    """Reads the event table in stream order, for one dialect."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = db.dialect == "postgresql"

    def _horizon(self, stmt: Select[Any]) -> Select[Any]:
        if not self.postgres:
            return stmt
        xmin = text("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        return stmt.where(FleetEvent.txid < xmin)

    async def read_after(self, after: Position, limit: int) -> list[StreamedEvent]:
        """Up to `limit` deliverable events after `after`, in stream order."""
        stmt: Select[Any] = (
            select(FleetEvent.txid, *_COLUMNS)
            .where(tuple_(FleetEvent.txid, FleetEvent.id) > tuple_(*after))
            .order_by(FleetEvent.txid, FleetEvent.id)
        )
        stmt = self._horizon(stmt).limit(limit)
        async with self.db.read_sessions() as session:
            rows = (await session.execute(stmt)).all()
        return [_streamed(int(row[0]), row[1:]) for row in rows]

    async def head(self) -> Position:
        """The position of the newest deliverable event (or the origin)."""
        stmt: Any = select(FleetEvent.txid, FleetEvent.id).order_by(
            FleetEvent.txid.desc(), FleetEvent.id.desc()
        )
        async with self.db.read_sessions() as session:
            row = (await session.execute(self._horizon(stmt).limit(1))).first()
        return (int(row[0]), row[1]) if row else (0, ZERO)

    async def position_of(self, event_id: uuid.UUID) -> Position:
        """Where to resume after `event_id`.

        When the event is gone (pruned by retention), resume just before the first event with
        a later id: nothing is missed, a few events may come twice.
        """
        async with self.db.read_sessions() as session:
            stmt = select(FleetEvent.txid).where(FleetEvent.id == event_id)
            found = (await session.execute(stmt)).scalar()
            if found is not None:
                return (int(found), event_id)
            later = select(func.min(FleetEvent.txid)).where(FleetEvent.id > event_id)
            first = (await session.execute(later)).scalar()
        if first is None:
            return await self.head()
        return (int(first), ZERO)


@dataclass(eq=False)
class Subscription:
    """One subscriber's inbox of batches; `lagging` when it overflowed and must re-read."""

    limit: int
    queue: asyncio.Queue[list[StreamedEvent]] = field(default_factory=asyncio.Queue)
    held: int = 0
    lagging: bool = False

    def offer(self, batch: list[StreamedEvent]) -> None:
        if self.lagging:
            return
        if self.held + len(batch) > self.limit:
            self.lagging = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.held = 0
            self.queue.put_nowait([])  # wake the consumer so it notices
            return
        self.held += len(batch)
        self.queue.put_nowait(batch)

    async def next_batch(self, wait_s: float) -> list[StreamedEvent] | None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the inner wait completes, and a task that ignores cancel hangs shutdown.
        try:
            async with asyncio.timeout(wait_s):
                batch = await self.queue.get()
        except TimeoutError:
            return None
        self.held -= len(batch)
        return batch


def install_doorbell(db: Database, ring: Callable[[list[uuid.UUID]], None]) -> None:
    """Ring after every commit that wrote fleet events (other processes hear of them through
    the NOTIFY a trigger sends on PostgreSQL, see migration 0003)."""

    def after_flush(session: Session, _context: Any) -> None:
        ids = [o.id for o in session.new if isinstance(o, FleetEvent)]
        if ids:
            session.info.setdefault("fleet_event_ids", []).extend(ids)

    def after_commit(session: Session) -> None:
        ids = session.info.pop("fleet_event_ids", None)
        if ids:
            ring(ids)

    def after_rollback(session: Session) -> None:
        session.info.pop("fleet_event_ids", None)

    def pending(conn: Any) -> list[uuid.UUID] | None:
        # Never raise from a transaction hook: an invalidated connection refuses `info`.
        try:
            ids: list[uuid.UUID] | None = conn.info.pop(PENDING_EVENT_IDS, None)
        except Exception:
            return None
        return ids

    def on_connection_commit(conn: Any) -> None:
        # Core writers (insert_events). Rung as the commit is issued: a read that races it only
        # leaves the ids awaited, and the tailer polls quickly until it sees them.
        ids = pending(conn)
        if ids:
            ring(ids)

    def on_pool_reset(_dbapi: Any, record: Any, _state: Any) -> None:
        # A connection back in the pool: forget ids of a transaction that rolled back.
        record.info.pop(PENDING_EVENT_IDS, None)

    event.listen(db.engine.sync_engine, "commit", on_connection_commit)
    event.listen(db.engine.sync_engine.pool, "reset", on_pool_reset)
    event.listen(db.session_class, "after_flush", after_flush)
    event.listen(db.session_class, "after_commit", after_commit)
    event.listen(db.session_class, "after_soft_rollback", lambda s, _t: after_rollback(s))


def _parse_ids(payload: str) -> list[uuid.UUID]:
    ids = []
    for part in payload.split(","):
        with contextlib.suppress(ValueError):
            ids.append(uuid.UUID(part))
    return ids


class EventBroker:
    """The per-process tailer and its subscribers (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        poll_interval_s: float = 1.0,
        pending_poll_s: float = 0.05,
        queue_limit: int = 10_000,
        batch: int = 1000,
    ) -> None:
        self.db = db
        self.reader = StreamReader(db)
        self.poll_interval_s = poll_interval_s
        self.pending_poll_s = pending_poll_s
        self.queue_limit = queue_limit
        self.batch = batch
        self.cursor: Position = (0, ZERO)
        self.subscribers: set[Subscription] = set()
        # Called with every batch the tailer reads (e.g. to wake agents waiting for tasks).
        self.listeners: list[Callable[[list[StreamedEvent]], None]] = []
        self._bell = asyncio.Event()
        self._awaiting: dict[uuid.UUID, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        install_doorbell(self.db, self.ring)
        self.cursor = await self.reader.head()
        self._tasks.append(asyncio.create_task(self._tail(), name="event-stream-tailer"))
        if self.reader.postgres:
            self._tasks.append(asyncio.create_task(self._listen(), name="event-stream-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def ring(self, ids: list[uuid.UUID]) -> None:
        """Events committed (here, or elsewhere as a NOTIFY said): read the table soon."""
        now = time.monotonic()
        for event_id in ids:
            self._awaiting[event_id] = now
        self._bell.set()

    def subscribe(self) -> Subscription:
        sub = Subscription(limit=self.queue_limit)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    async def _tail(self) -> None:
        while True:
            timeout = self.pending_poll_s if self._awaiting else self.poll_interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: see Subscription
                    await self._bell.wait()
            self._bell.clear()
            try:
                await self._read_new()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database blinked: keep the cursor, try again later
                log.warning("event stream: reading new events failed", exc_info=True)
                await asyncio.sleep(self.poll_interval_s)

    async def _read_new(self) -> None:
        while True:
            batch = await self.reader.read_after(self.cursor, self.batch)
            if not batch:
                break
            for sub in tuple(self.subscribers):
                sub.offer(batch)
            for listener in self.listeners:
                listener(batch)
            self.cursor = batch[-1].position
            for item in batch:
                self._awaiting.pop(item.position[1], None)
            if len(batch) < self.batch:
                break
        # Forget ids we were told about but never saw (deleted, or a lost transaction).
        stale = time.monotonic() - 30
        for event_id in [k for k, t in self._awaiting.items() if t < stale]:
            del self._awaiting[event_id]

    async def _listen(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        url = make_url(self.db.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(dsn)
            except (OSError, asyncpg.PostgresError):
                log.warning("event stream: LISTEN connection failed; polling meanwhile")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.5
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(
                    CHANNEL, lambda _c, _p, _ch, payload: self.ring(_parse_ids(payload))
                )
                self._bell.set()  # catch up on anything committed while not listening
                await lost.wait()
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()


@dataclass(frozen=True)
class StreamFilter:
    """Which events a subscriber wants (`kind` ending in `.*` matches a prefix)."""

    kind: str | None = None
    severity: str | None = None
    subject_type: str | None = None
    subject_id: uuid.UUID | None = None
    correlation_id: uuid.UUID | None = None

    def matches(self, item: StreamedEvent) -> bool:
        if self.kind is not None:
            if self.kind.endswith(".*"):
                if not item.kind.startswith(self.kind[:-1]):
                    return False
            elif item.kind != self.kind:
                return False
        return (
            (self.severity is None or item.severity == self.severity)
            and (self.subject_type is None or item.subject_type == self.subject_type)
            and (self.subject_id is None or item.subject_id == self.subject_id)
            and (self.correlation_id is None or item.correlation_id == self.correlation_id)
        )


async def sse_frames(
    broker: EventBroker,
    flt: StreamFilter,
    *,
    resume_after: uuid.UUID | None,
    keepalive_s: float = 15.0,
    retry_ms: int = 2000,
) -> AsyncGenerator[bytes, None]:
    """Server-Sent Events: every matching event after `resume_after` (else from now on)."""
    sub = broker.subscribe()
    try:
        if resume_after is None:
            cursor = broker.cursor
            catching_up = False
        else:
            cursor = await broker.reader.position_of(resume_after)
            catching_up = True
        yield f"retry: {retry_ms}\n\n".encode()
        while True:
            if catching_up or sub.lagging:
                sub.lagging = False
                catching_up = False
                while True:
                    batch = await broker.reader.read_after(cursor, broker.batch)
                    out = [e.frame for e in batch if flt.matches(e)]
                    if batch:
                        cursor = batch[-1].position
                    if out:
                        yield b"".join(out)
                    if len(batch) < broker.batch:
                        break
                continue
            live = await sub.next_batch(keepalive_s)
            if live is None:
                yield b": keepalive\n\n"
                continue
            out = []
            for item in live:
                if item.position > cursor:
                    cursor = item.position
                    if flt.matches(item):
                        out.append(item.frame)
            if out:
                yield b"".join(out)
    finally:
        broker.unsubscribe(sub)
