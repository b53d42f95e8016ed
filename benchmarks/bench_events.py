"""Fleet event log benchmarks (issue 6), on PostgreSQL, in one run:

- ingest: concurrent writers commit events through `record_event` (the path every state change
  takes: ORM insert, NOTIFY, commit), one event per transaction and ten per transaction.
  Target >= 5,000 events/s.
- stream: a real `powernode serve` with 100 SSE subscribers; a writer commits events at a steady
  rate and each subscriber measures commit-to-delivery. Target p99 <= 1 s.
- retention: 1,000,000 expired events pruned by the retention job's code while writers keep
  committing; reports the duration (target <= 60 s) and the writers' commit p50/p99 before and
  during.

Run: `.venv/bin/python benchmarks/bench_events.py [--only ingest|stream|retention]`; each part
creates its own database on `--postgres-url` and drops it afterwards. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from bench_api import DEFAULT_PG, percentile, postgres_database
from sqlalchemy import text

from powernode.clock import SystemClock
from powernode.db.engine import Database
from powernode.db.migrate import upgrade_async
from powernode.events.log import EventContext, event_values, insert_events, record_event
from powernode.events.retention import RetentionPolicy, prune_events
from powernode.testing import running_server

INGEST_TARGET = 5000.0
STREAM_P99_TARGET_S = 1.0
RETENTION_TARGET_S = 60.0


async def _write_loop(
    db: Database, per_tx: int, stop_at: float, latencies: list[float] | None = None
) -> int:
    ctx = EventContext(actor="bench")
    written = 0
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        async with db.transaction() as session:
            for _ in range(per_tx):
                await record_event(
                    session,
                    ctx,
                    kind="bench.ingest",
                    subject_type="bench",
                    subject_id=None,
                    payload={"n": written},
                )
        if latencies is not None:
            latencies.append((time.perf_counter() - started) * 1000)
        written += per_tx
    return written


async def _core_write_loop(db: Database, per_tx: int, stop_at: float) -> int:
    """The Core path hot writers use (`insert_events`, as task claims do): no ORM session."""
    ctx = EventContext(actor="bench")
    written = 0
    while time.monotonic() < stop_at:
        rows = [
            event_values(
                ctx,
                kind="bench.ingest",
                subject_type="bench",
                subject_id=None,
                payload={"n": written + i},
            )
            for i in range(per_tx)
        ]
        async with db.engine.begin() as conn:
            await insert_events(conn, rows)
        written += per_tx
    return written


async def ingest(url: str, *, writers: int, seconds: float) -> dict[str, Any]:
    await upgrade_async(url)
    db = Database(url, pool_size=writers)
    results: dict[str, Any] = {}
    try:
        variants = (
            ("orm", 1, _write_loop),
            ("orm", 10, _write_loop),
            ("core", 1, _core_write_loop),
        )
        for path, per_tx, loop in variants:
            await loop(db, per_tx, time.monotonic() + 1)  # warm the pool
            rates = []
            for _ in range(3):
                started = time.monotonic()
                stop_at = started + seconds
                counts = await asyncio.gather(*(loop(db, per_tx, stop_at) for _ in range(writers)))
                rates.append(sum(counts) / (time.monotonic() - started))
            results[f"{path}_events_per_tx_{per_tx}"] = {
                "events_per_s_runs": [round(r) for r in rates],
                "events_per_s_median": round(statistics.median(rates)),
            }
    finally:
        await db.dispose()
    best = max(r["events_per_s_median"] for r in results.values())
    results.update(writers=writers, target_events_per_s=INGEST_TARGET, met=best >= INGEST_TARGET)
    return results


async def _subscriber(
    url: str,
    token: str,
    received: list[tuple[str, float]],
    ready: asyncio.Event,
    counter: list[int],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=120)) as http,
        http.stream("GET", "/api/v1/events/stream", headers=headers) as response,
    ):
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        buffer = b""
        async for chunk in response.aiter_bytes():
            now = time.monotonic()
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                if frame.startswith(b"id: "):
                    received.append((frame[4:40].decode(), now))


async def stream(url: str, *, subscribers: int, rate: float, seconds: float) -> dict[str, Any]:
    await upgrade_async(url)
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), database_url=url) as srv:
        committed: dict[str, float] = {}
        received: list[tuple[str, float]] = []
        ready = asyncio.Event()
        counter = [0, subscribers]
        tasks = [
            asyncio.create_task(_subscriber(srv.url, srv.token, received, ready, counter))
            for _ in range(subscribers)
        ]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1)
        db = Database(url, pool_size=4)
        ctx = EventContext(actor="bench")
        total = int(rate * seconds)
        started = time.monotonic()
        try:
            for n in range(total):
                due = started + n / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                async with db.transaction() as session:
                    row = await record_event(
                        session, ctx, kind="bench.stream", subject_type="bench", subject_id=None
                    )
                committed[str(row.id)] = time.monotonic()
            deadline = time.monotonic() + 15
            while len(received) < total * subscribers and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await db.dispose()
    # A frame can be parsed in the same loop turn as the commit's reply, before the writer
    # noted the commit time: that delivery took ~0 ms.
    delays = [max(0.0, at - committed[i]) for i, at in received if i in committed]
    ordered = sorted(d * 1000 for d in delays)
    p99 = percentile(ordered, 99) / 1000 if ordered else float("inf")
    return {
        "subscribers": subscribers,
        "events": total,
        "rate_per_s": rate,
        "deliveries_expected": total * subscribers,
        "deliveries_seen": len(delays),
        "p50_ms": round(percentile(ordered, 50), 1) if ordered else None,
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1], 1) if ordered else None,
        "target_p99_s": STREAM_P99_TARGET_S,
        "met": p99 <= STREAM_P99_TARGET_S and len(delays) == total * subscribers,
    }


async def retention(url: str, *, expired: int, writers: int) -> dict[str, Any]:
    await upgrade_async(url)
    db = Database(url, pool_size=writers + 2)
    try:
        load_started = time.monotonic()
        async with db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO fleet_events (id, occurred_at, kind, severity, subject_type,"
                    " actor, correlation_id, payload) SELECT gen_random_uuid(),"
                    " now() - interval '400 days' + g * interval '1 millisecond', 'bench.old',"
                    " 'routine', 'bench', 'bench', gen_random_uuid(), '{}'::jsonb"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"n": expired},
            )
        await _analyze(db)
        load_s = time.monotonic() - load_started

        baseline: list[float] = []
        await asyncio.gather(
            *(_write_loop(db, 1, time.monotonic() + 5, baseline) for _ in range(writers))
        )
        during: list[float] = []
        stop = asyncio.Event()

        async def keep_writing() -> None:
            while not stop.is_set():
                await _write_loop(db, 1, time.monotonic() + 0.5, during)

        background = [asyncio.create_task(keep_writing()) for _ in range(writers)]
        started = time.monotonic()
        deleted = await prune_events(db, SystemClock(), RetentionPolicy(batch=5000))
        duration = time.monotonic() - started
        stop.set()
        await asyncio.gather(*background)
    finally:
        await db.dispose()
    baseline.sort()
    during.sort()
    return {
        "expired_events": expired,
        "load_s": round(load_s, 1),
        "deleted": deleted,
        "duration_s": round(duration, 1),
        "writers": writers,
        "writer_commit_ms_before": {
            "p50": round(percentile(baseline, 50), 1),
            "p99": round(percentile(baseline, 99), 1),
        },
        "writer_commit_ms_during": {
            "p50": round(percentile(during, 50), 1),
            "p99": round(percentile(during, 99), 1),
            "commits": len(during),
        },
        "target_s": RETENTION_TARGET_S,
        "met": duration <= RETENTION_TARGET_S and deleted["routine"] == expired,
    }


async def _analyze(db: Database) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(text("ANALYZE fleet_events"))
        await conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--only", choices=["ingest", "stream", "retention"])
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="stream: events per second")
    parser.add_argument("--expired", type=int, default=1_000_000)
    args = parser.parse_args()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "run": str(uuid.uuid4())[:8]}
    parts = [args.only] if args.only else ["ingest", "stream", "retention"]
    for part in parts:
        with postgres_database(args.postgres_url) as url:
            if part == "ingest":
                report["ingest"] = asyncio.run(
                    ingest(url, writers=args.writers, seconds=args.seconds)
                )
            elif part == "stream":
                report["stream"] = asyncio.run(
                    stream(url, subscribers=args.subscribers, rate=args.rate, seconds=20)
                )
            else:
                report["retention"] = asyncio.run(retention(url, expired=args.expired, writers=4))
        print(json.dumps({part: report[part]}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
