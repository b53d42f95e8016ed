"""The live event stream over real HTTP: resume with Last-Event-ID, filters, fan-out between two
`serve` processes, and events whose transactions commit out of id order."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from powernode.db.engine import Database
from powernode.events.log import EventContext, record_event
from powernode.events.models import FleetEvent
from powernode.events.stream import EventBroker, StreamFilter, sse_frames
from powernode.testing import RunningServer, running_server


class SseClient:
    """Reads `id:`/`data:` frames from one open stream."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next_event(self, wait_s: float = 10.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            event_id, data = None, None
            async for line in self.lines:
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and data is not None:
                    assert data["id"] == event_id
                    return dict(data)
            raise AssertionError("stream ended")

        return await asyncio.wait_for(read(), wait_s)

    async def take(self, count: int) -> list[dict[str, Any]]:
        return [await self.next_event() for _ in range(count)]


@contextlib.asynccontextmanager
async def open_stream(
    server: RunningServer, *, params: dict[str, str] | None = None, last_event_id: str | None = None
) -> AsyncIterator[SseClient]:
    headers = {"Authorization": f"Bearer {server.token}"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
        http.stream("GET", "/api/v1/events/stream", headers=headers, params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseClient(response)


def create_nodes(server: RunningServer, names: list[str]) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    for name in names:
        httpx.post(
            f"{server.url}/api/v1/nodes", json={"name": name}, headers=headers
        ).raise_for_status()


@pytest.fixture
def server(migrated_db_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path / "a", database_url=migrated_db_url) as srv:
        yield srv


async def test_a_client_that_reconnects_with_last_event_id_misses_nothing(
    server: RunningServer,
) -> None:
    async with open_stream(server, params={"kind": "node.created"}) as stream:
        await asyncio.to_thread(create_nodes, server, ["a1", "a2", "a3"])
        first = await stream.take(2)
    # Disconnected after two of three; more happen while away.
    await asyncio.to_thread(create_nodes, server, ["b1", "b2"])
    async with open_stream(
        server, params={"kind": "node.created"}, last_event_id=first[-1]["id"]
    ) as stream:
        rest = await stream.take(3)
        await asyncio.to_thread(create_nodes, server, ["c1"])
        rest.append(await stream.next_event())
    names = [e["payload"]["name"] for e in first + rest]
    assert names == ["a1", "a2", "a3", "b1", "b2", "c1"]


async def test_the_stream_filters_and_resumes_from_a_query_parameter(
    server: RunningServer,
) -> None:
    await asyncio.to_thread(create_nodes, server, ["x1"])
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(
            "/api/v1/events", params={"kind": "node.created"}, headers=headers
        )
    listed = response.json()["items"]
    await asyncio.to_thread(create_nodes, server, ["x2"])
    params = {"kind": "node.*", "last_event_id": listed[-1]["id"]}
    async with open_stream(server, params=params) as stream:
        event = await stream.next_event()
    assert (event["kind"], event["payload"]["name"]) == ("node.created", "x2")
    assert event["occurred_at"].endswith("Z")


async def test_a_bad_last_event_id_and_a_missing_token_are_refused(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        anonymous = await http.get("/api/v1/events/stream")
        bad = await http.get(
            "/api/v1/events/stream",
            headers={"Authorization": f"Bearer {server.token}", "Last-Event-ID": "yesterday"},
        )
    assert anonymous.status_code == 401
    assert bad.status_code == 422
    assert "last-event-id" in bad.text.lower()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_serve_processes_both_stream_an_event_created_through_either(
    migrated_db_url: str, tmp_path: Path
) -> None:
    env = {"POWERNODE_PKI_PASSPHRASE": "replicas-share-this-passphrase"}
    with (
        running_server(tmp_path / "a", database_url=migrated_db_url, env=env) as a,
        running_server(tmp_path / "b", database_url=migrated_db_url, token=a.token, env=env) as b,
    ):
        async with (
            open_stream(a, params={"kind": "node.created"}) as on_a,
            open_stream(b, params={"kind": "node.created"}) as on_b,
        ):
            await asyncio.to_thread(create_nodes, b, ["via-b"])
            await asyncio.to_thread(create_nodes, a, ["via-a"])
            seen_a = [e["payload"]["name"] for e in await on_a.take(2)]
            seen_b = [e["payload"]["name"] for e in await on_b.take(2)]
    assert seen_a == seen_b == ["via-b", "via-a"]


async def _collect(frames: AsyncIterator[bytes], into: list[str]) -> None:
    async for frame in frames:
        for line in frame.decode().splitlines():
            if line.startswith("data: "):
                into.append(json.loads(line[6:])["kind"])


async def test_an_event_committed_late_is_delivered_and_never_skipped(database: Database) -> None:
    """A transaction that wrote first but commits last must not be passed over (PostgreSQL
    orders by transaction and waits for older ones; SQLite serializes writers)."""
    broker = EventBroker(database, poll_interval_s=0.1)
    await broker.start()
    seen: list[str] = []
    consumer = asyncio.create_task(
        _collect(sse_frames(broker, StreamFilter(kind="t.*"), resume_after=None), seen)
    )
    ctx = EventContext(actor="test")
    try:
        slow = database.sessions()
        await record_event(slow, ctx, kind="t.slow", subject_type="t", subject_id=None)
        if database.dialect == "postgresql":
            await slow.flush()  # the slow transaction now holds the lower event id and txid
            async with database.transaction() as fast:
                await record_event(fast, ctx, kind="t.fast", subject_type="t", subject_id=None)
            await asyncio.sleep(0.5)
            assert seen == [], "an event passed one an older open transaction may still commit"
        await slow.commit()
        await slow.close()
        if database.dialect != "postgresql":
            async with database.transaction() as fast:
                await record_event(fast, ctx, kind="t.fast", subject_type="t", subject_id=None)
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.05)
        assert seen == ["t.slow", "t.fast"]
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await broker.stop()


async def test_a_subscriber_that_falls_behind_rereads_the_table_and_loses_nothing(
    database: Database,
) -> None:
    broker = EventBroker(database, poll_interval_s=0.05, queue_limit=5, batch=3)
    await broker.start()
    frames: AsyncGenerator[bytes, None] = sse_frames(broker, StreamFilter(), resume_after=None)
    first = await anext(frames)  # the retry line: the subscription is open from here on
    assert first.startswith(b"retry:")
    ctx = EventContext(actor="test")
    written = []
    try:
        for i in range(40):
            async with database.transaction() as session:
                row = await record_event(
                    session,
                    ctx,
                    kind="t.burst",
                    subject_type="t",
                    subject_id=None,
                    payload={"i": i},
                )
                written.append(str(row.id))
        await asyncio.sleep(0.5)  # the tailer overflows this subscriber's queue meanwhile
        received: list[str] = []
        while len(received) < len(written):
            chunk = await asyncio.wait_for(anext(frames), 5)
            received += [
                line[4:] for line in chunk.decode().splitlines() if line.startswith("id: ")
            ]
        assert received == written
    finally:
        await frames.aclose()
        await broker.stop()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_notifications_carry_only_ids_within_the_payload_limit(database: Database) -> None:
    import asyncpg  # type: ignore[import-untyped]

    from powernode.events.stream import CHANNEL, _parse_ids

    dsn = database.url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    payloads: list[str] = []
    await conn.add_listener(CHANNEL, lambda _c, _p, _ch, payload: payloads.append(payload))
    ctx = EventContext(actor="test")
    try:
        async with database.transaction() as session:
            rows = [
                await record_event(session, ctx, kind="t.many", subject_type="t", subject_id=None)
                for _ in range(1000)
            ]
        for _ in range(50):
            if payloads:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    assert payloads
    assert all(len(p.encode()) < 8000 for p in payloads)
    heard = {i for p in payloads for i in _parse_ids(p)}
    assert rows[-1].id in heard
    assert heard <= {r.id for r in rows}


async def test_positions_keep_growing_after_retention_empties_the_log(database: Database) -> None:
    reader = EventBroker(database).reader
    ctx = EventContext(actor="test")
    for _ in range(3):
        async with database.transaction() as session:
            await record_event(session, ctx, kind="t.old", subject_type="t", subject_id=None)
    before = await reader.head()
    async with database.transaction() as session:
        await session.execute(delete(FleetEvent))
    async with database.transaction() as session:
        await record_event(session, ctx, kind="t.new", subject_type="t", subject_id=None)
    assert [e.kind for e in await reader.read_after(before, 10)] == ["t.new"]
